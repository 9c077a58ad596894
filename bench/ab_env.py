#!/usr/bin/env python3
"""A/B of one spinel model under two environment settings, interleaved.

Each round runs `spinel bench` (scenario single: batch-1 latency, and offline:
batches of --batch) once per variant, the order alternating from round to
round, and, with --onnx, ONNX Runtime FP32 on the same ONNX file with the same
token count and threads in the same round (the baseline the ratios are quoted
against). Reports per variant the median (min-max) of the per-round single-
stream p50 and offline throughput, the median of the per-round ratios B/A, and
each variant's ratio to ORT FP32.

A variant may also be spinel=PATH: another build's binary (e.g. of the commit
before a change, from `git worktree add`), run with the environment as it is;
or model=PATH: another .spnl of the same model (e.g. `convert --smooth off`),
run in place of the positional one.

Example (attention in FP32 vs on AMX-BF16 for an INT8 model):
  .venv/bin/python bench/ab_env.py work/bb90/int8.spnl --onnx work/bb90/model.onnx \\
      --a SPINEL_ATTENTION=f32 --b SPINEL_ATTENTION=auto --rounds 20
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_bench(spinel, model, env_kv, scenario, seq, batch, threads, duration):
    env = dict(os.environ)
    k, _, v = env_kv.partition("=")
    if k == "spinel":
        spinel = v  # another build: spinel=PATH
    elif k == "model":
        model = v  # another conversion of the same model: model=PATH.spnl
    else:
        env[k] = v
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [spinel, "bench", model, "--scenario", scenario, "--seq", str(seq), "--threads",
               str(threads), "--duration", duration, "--warmup", "0.3s", "--json", f.name]
        if scenario == "offline":
            cmd += ["--max-batch", str(batch)]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.load(open(f.name))


def single_p50_ms(doc):
    return doc["best"]["latency_ms"]["p50"]


def offline_rate(doc):
    return doc["best"]["achieved_rate"]


class Ort:
    def __init__(self, onnx, seq, threads):
        import numpy as np
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.s = ort.InferenceSession(onnx, so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        ids = rng.integers(1000, 20000, size=(1, seq), dtype=np.int64)
        ids[0, 0], ids[0, -1] = 101, 102
        feeds = {}
        for i in self.s.get_inputs():
            if "mask" in i.name:
                feeds[i.name] = np.ones((1, seq), np.int64)
            elif "type" in i.name:
                feeds[i.name] = np.zeros((1, seq), np.int64)
            else:
                feeds[i.name] = ids
        self.feeds = feeds
        for _ in range(3):
            self.s.run(None, feeds)

    def p50_ms(self, n=15):
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.s.run(None, self.feeds)
            t.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(t)


def fmt(xs):
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--a", required=True,
                    help="VAR=VALUE of variant A (the baseline), or spinel=PATH for another build")
    ap.add_argument("--b", required=True, help="VAR=VALUE or spinel=PATH of variant B")
    ap.add_argument("--onnx", help="ONNX file for the ORT FP32 baseline in the same rounds")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8, help="offline batch (default 8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--duration", default="1s", help="spinel bench --duration per run (default 1s)")
    ap.add_argument("--spinel", default=os.path.join(ROOT, "build", "spinel"))
    args = ap.parse_args()

    ort = Ort(args.onnx, args.seq, args.threads) if args.onnx else None
    res = {v: {"single": [], "offline": []} for v in (args.a, args.b)}
    ort_ms = []
    for r in range(args.rounds):
        order = [args.a, args.b] if r % 2 == 0 else [args.b, args.a]
        for v in order:
            res[v]["single"].append(single_p50_ms(run_bench(args.spinel, args.model, v, "single", args.seq,
                                                            args.batch, args.threads, args.duration)))
            res[v]["offline"].append(offline_rate(run_bench(args.spinel, args.model, v, "offline", args.seq,
                                                            args.batch, args.threads, args.duration)))
        if ort:
            ort_ms.append(ort.p50_ms())
        print(f"\rround {r + 1}/{args.rounds}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    print(f"model {args.model}, seq {args.seq}, threads {args.threads}, {args.rounds} rounds, "
          f"load average at end {os.getloadavg()[0]:.2f}")
    print("| variant | single-stream p50 ms, median (min-max) | x ORT FP32 | "
          f"offline b{args.batch} seq/s, median (min-max) |")
    print("|---|---:|---:|---:|")
    for v in (args.a, args.b):
        s, o = res[v]["single"], res[v]["offline"]
        vs_ort = ("%.2fx" % statistics.median([t / x for t, x in zip(ort_ms, s)])) if ort else "-"
        print(f"| {v} | {fmt(s)} | {vs_ort} | {fmt(o)} |")
    if ort:
        print(f"| ORT FP32 | {fmt(ort_ms)} | 1.00x | - |")
    sa, sb = res[args.a]["single"], res[args.b]["single"]
    oa, ob = res[args.a]["offline"], res[args.b]["offline"]
    print(f"B over A, median of per-round ratios: single-stream {statistics.median([a / b for a, b in zip(sa, sb)]):.3f}x "
          f"faster, offline {statistics.median([b / a for a, b in zip(oa, ob)]):.3f}x the throughput")


if __name__ == "__main__":
    main()

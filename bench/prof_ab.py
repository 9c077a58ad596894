#!/usr/bin/env python3
"""Per-op A/B of two spinel builds (or one build under two environments).

Runs `spinel run MODEL --ids ... --repeat R --profile --pool none` with A and
B alternating (A B, B A, A B, ...) for ROUNDS rounds and prints, per op of the
profile (op kind and shape), the median ms per run of each and the median of
the per-round ratios B / A: the ratio within a round cancels most of what the
shared machine does over minutes.

  bench/prof_ab.py MODEL.spnl IDS_FILE ROUNDS A_BIN B_BIN [--env-a K=V,...] [--env-b K=V,...] [--repeat 200]

IDS_FILE holds one input per line, comma-separated token ids (several lines:
one batch). Example, the same build with a switch off and on:

  bench/prof_ab.py work/peers/bert-base-90/int8-sparse.spnl ids.txt 8 build/spinel build/spinel \\
      --env-a SPINEL_QKV_K2=off
"""
import argparse
import os
import re
import statistics
import subprocess
import sys


def parse_env(text):
    env = dict(os.environ)
    for kv in filter(None, (text or "").split(",")):
        if "=" not in kv:
            sys.exit(f"prof_ab.py: bad environment entry '{kv}' (want K=V)")
        k, v = kv.split("=", 1)
        env[k] = v
    return env


def profile(binary, model, ids, repeat, env):
    cmd = [binary, "run", model]
    for line in ids:
        cmd += ["--ids", line]
    cmd += ["--repeat", str(repeat), "--profile", "--pool", "none"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except OSError as e:
        sys.exit(f"prof_ab.py: cannot run {binary}: {e.strerror}")
    if proc.returncode != 0:
        sys.exit(f"prof_ab.py: {binary} failed ({proc.returncode}): {proc.stderr.strip()[-400:]}")
    res = {}
    for line in proc.stderr.splitlines():  # the profile table goes to stderr
        m = re.match(r"^(\w+)\s+(\S+)\s+(\S+)\s+(\d+)\s+([\d.]+)\s", line)
        if m and m.group(1) != "op":
            key = f"{m.group(1)} {m.group(3)}"
            res[key] = res.get(key, 0.0) + float(m.group(5))
        m = re.match(r"^total\s+\d+\s+([\d.]+)", line)
        if m:
            res["total"] = float(m.group(1))
    if "total" not in res:
        sys.exit(f"prof_ab.py: no profile table in the output of {binary}")
    return res


def main():
    ap = argparse.ArgumentParser(description="per-op A/B of two spinel builds, alternating")
    ap.add_argument("model")
    ap.add_argument("ids_file")
    ap.add_argument("rounds", type=int)
    ap.add_argument("a_bin")
    ap.add_argument("b_bin")
    ap.add_argument("--env-a", default="")
    ap.add_argument("--env-b", default="")
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    try:
        with open(args.ids_file) as f:
            ids = [line.strip() for line in f if line.strip()]
    except OSError as e:
        sys.exit(f"prof_ab.py: cannot read {args.ids_file}: {e.strerror}")
    if not ids:
        sys.exit(f"prof_ab.py: {args.ids_file} holds no ids")
    env_a, env_b = parse_env(args.env_a), parse_env(args.env_b)
    runs_a, runs_b = [], []
    for r in range(args.rounds):
        order = [("a", args.a_bin, env_a), ("b", args.b_bin, env_b)]
        if r % 2:
            order.reverse()
        for who, binary, env in order:
            (runs_a if who == "a" else runs_b).append(profile(binary, args.model, ids, args.repeat, env))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    print(f"{'op':28s} {'A ms':>8s} {'B ms':>8s} {'B/A':>7s}")
    for key in runs_a[0]:
        if not all(key in x for x in runs_a + runs_b):
            continue
        ma = statistics.median(x[key] for x in runs_a)
        mb = statistics.median(x[key] for x in runs_b)
        ratio = statistics.median(y[key] / x[key] for x, y in zip(runs_a, runs_b) if x[key] > 0)
        print(f"{key:28s} {ma:8.3f} {mb:8.3f} {ratio:7.3f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""End-to-end latency: sparse INT8 spinel vs ONNX Runtime FP32 and INT8.

Models (4x1 block pruning by magnitude with tools/prune_bert.py, per-layer
scope: every encoder Linear reaches the target; no fine-tuning, which does not
change latency):
  bert-base-90   randomly initialised BERT-base, 90% block sparsity
  bert-large-90  randomly initialised BERT-large, 90%
  minilm-80      the real all-MiniLM-L6-v2, 80%
all exported at opset 17. From each pruned ONNX file:
  spinel INT8 sparse   spinel convert --quant int8 --sparse auto  (the subject)
  spinel INT8 dense    spinel convert --quant int8 --sparse off   (extra row)
  spinel FP32          spinel convert                             (extra row)
  ORT FP32             the pruned ONNX file itself
  ORT INT8             onnxruntime.quantization.quantize_dynamic of the same
                       file, weight_type=QInt8, per_channel=True (falls back to
                       per-tensor if that fails to build or run; the table says
                       which), other options at their defaults

Everything runs in this one Python process with the helpers of
bench/e2e_latency.py (spinel through libspinel.so with OMP_WAIT_POLICY=PASSIVE,
ORT with intra-op = --threads, inter-op 1, sequential, ORT_ENABLE_ALL). After
--warmup runs of each, every repetition runs every runtime once, the order
rotating and reversing from one repetition to the next, with a --pause sleep
before each timed run. Reported per runtime: median (min-max) ms, and the
median over repetitions of the per-repetition ratio t(runtime)/t(spinel INT8
sparse) = how many times faster sparse INT8 spinel is. Agreement: cosine of
the mean-pooled last_hidden_state of each runtime vs ORT FP32 (minimum over
the batch), and the minimum per-token cosine.

Example (from the repository root). ORT 1.19's quantization package needs onnx >= 1.13, newer than
Debian's onnx 1.12 that .venv sees, so quantize_dynamic runs in a separate small venv:
  python3 -m venv work/qvenv && work/qvenv/bin/pip install onnxruntime==1.19.2 onnx==1.16.2 "numpy<2"
  .venv/bin/python bench/e2e_int8.py --build-dir build --work-dir work/bench-int8 \\
      --quant-python work/qvenv/bin/python
Results are appended to bench/RESULTS.md (--no-write to skip).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_latency  # noqa: E402  (sets OMP_WAIT_POLICY=PASSIVE before any OpenMP library loads)

import argparse  # noqa: E402
import datetime  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = e2e_latency.ROOT
stats = e2e_latency.stats

# name -> (tools/prune_bert.py arguments, [(seq, batch), ...])
CASES = {
    "bert-base-90": (["--random-config", "bert-base", "--seed", "0", "--sparsity", "0.9",
                      "--scope", "per-layer", "--opset", "17"], [(128, 1), (384, 1)]),
    "bert-large-90": (["--random-config", "bert-large", "--seed", "0", "--sparsity", "0.9",
                       "--scope", "per-layer", "--opset", "17"], [(384, 1)]),
    "minilm-80": (["--model", "minilm", "--sparsity", "0.8", "--scope", "per-layer", "--opset", "17"],
                  [(128, 1), (128, 8)]),
}

SUBJECT = "spinel INT8 sparse"
REFERENCE = "ORT FP32"
RUNTIMES = [SUBJECT, "spinel INT8 dense", "spinel FP32", REFERENCE, "ORT INT8"]
SPINEL_CONVERT = {SUBJECT: ["--quant", "int8", "--sparse", "auto"],
                  "spinel INT8 dense": ["--quant", "int8", "--sparse", "off"],
                  "spinel FP32": []}
SPNL_NAME = {SUBJECT: "int8-sparse.spnl", "spinel INT8 dense": "int8-dense.spnl", "spinel FP32": "fp32.spnl"}
GOALS = {REFERENCE: 25.0, "ORT INT8": 5.0}  # set for BERT-base only
GOAL_CASES = {"bert-base-90"}


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def prune(name, work_dir):
    """The pruned ONNX file of a case, made with tools/prune_bert.py unless already there."""
    args = CASES[name][0]
    d = os.path.join(work_dir, name)
    onnx_path = os.path.join(d, "model.onnx")
    stamp = os.path.join(d, "prune-args.json")
    if not (os.path.exists(onnx_path) and os.path.exists(stamp) and json.load(open(stamp)) == args):
        os.makedirs(d, exist_ok=True)
        e2e_latency.sh([sys.executable, os.path.join(ROOT, "tools", "prune_bert.py"), *args, "-o", onnx_path])
        with open(stamp, "w") as f:
            json.dump(args, f)
    return onnx_path


QUANTIZE = """
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, per_channel=sys.argv[3] == "1")
"""


def ort_quantize(onnx_path, quant_python):
    """quantize_dynamic (QInt8 weights) next to onnx_path; per-channel if ORT can build and run it.

    Runs in a child process of quant_python: ORT 1.19's quantization package needs onnx >= 1.13
    (onnx.reference, float8 types), newer than Debian's python3-onnx 1.12 that the venv sees.
    """
    import onnxruntime as ort

    d = os.path.dirname(onnx_path)
    src_stamp = os.path.getmtime(onnx_path)
    why = None
    for per_channel in (True, False):
        out = os.path.join(d, "ort-int8-%s.onnx" % ("per-channel" if per_channel else "per-tensor"))
        try:
            if not (os.path.exists(out) and os.path.getmtime(out) > src_stamp):
                print(f"+ quantize_dynamic({onnx_path}, {out}, weight_type=QInt8, per_channel={per_channel}) "
                      f"with {quant_python}", flush=True)
                p = subprocess.run([quant_python, "-c", QUANTIZE, onnx_path, out, "1" if per_channel else "0"],
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
                    raise RuntimeError(f"quantize_dynamic failed: {tail}")
            # It must also load and run here, not just be written.
            sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
            ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
            sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids),
                            "token_type_ids": np.zeros_like(ids)})
            del sess
            return out, per_channel, why
        except Exception as e:  # noqa: BLE001 -- report, then fall back to per-tensor
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"ORT INT8 per_channel={per_channel} failed: {why}", flush=True)
            if not per_channel:
                raise


def convert(spinel_bin, onnx_path, runtime):
    spnl = os.path.join(os.path.dirname(onnx_path), SPNL_NAME[runtime])
    e2e_latency.sh([spinel_bin, "convert", onnx_path, *SPINEL_CONVERT[runtime], "-o", spnl])
    return spnl


def layer_summary(spinel_bin, spnl):
    """'N sparse INT8 + M dense INT8 (+ F f32) Linears, block sparsity mean x' from spinel inspect --json."""
    info = json.loads(subprocess.run([spinel_bin, "inspect", spnl, "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    counts, sparsities = {}, []
    for op in info.get("ops", []):
        prec = op.get("precision")
        if op.get("kind") != "Linear" or prec is None:
            continue
        counts[prec] = counts.get(prec, 0) + 1
        if op.get("block_sparsity") is not None:
            sparsities.append(float(op["block_sparsity"]))
    s = ", ".join(f"{n} {p}" for p, n in sorted(counts.items())) + " Linear ops"
    if sparsities:
        s += f"; 4x1 block sparsity mean {statistics.mean(sparsities):.3f} (min {min(sparsities):.3f})"
    return s


def pooled_cos(a, b):
    """a, b: [B, S, H] -> (min over batch of cos(mean-pooled a, mean-pooled b), min per-token cos)."""
    pa, pb = a.mean(axis=1), b.mean(axis=1)
    cp = np.sum(pa * pb, axis=1) / (np.linalg.norm(pa, axis=1) * np.linalg.norm(pb, axis=1))
    ct = np.sum(a * b, axis=2) / (np.linalg.norm(a, axis=2) * np.linalg.norm(b, axis=2))
    return float(cp.min()), float(ct.min())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"),
                    help="folder with spinel and libspinel.so (default: build)")
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "work", "bench-int8"),
                    help="pruned exports, ORT INT8 files and .spnl files go here (reused if present)")
    ap.add_argument("--cases", default="bert-base-90,bert-large-90,minilm-80",
                    help="comma-separated subset of: " + ", ".join(CASES))
    ap.add_argument("--runtimes", default=",".join(RUNTIMES),
                    help=f"comma-separated subset of the runtimes (must include {SUBJECT!r})")
    ap.add_argument("--quant-python", default=sys.executable,
                    help="Python that runs onnxruntime.quantization.quantize_dynamic (needs onnx >= 1.13; "
                         "default: this one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions per shape (>= 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pause", type=float, default=0.05, help="seconds before each timed run")
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    ap.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    if args.reps < 20:
        ap.error("--reps must be at least 20")
    runtimes = [r for r in RUNTIMES if r in args.runtimes.split(",")]
    unknown = set(args.runtimes.split(",")) - set(RUNTIMES)
    if unknown or SUBJECT not in runtimes:
        ap.error(f"--runtimes: unknown {sorted(unknown)} or {SUBJECT!r} missing; choose from {RUNTIMES}")
    cases = args.cases.split(",")
    if set(cases) - set(CASES):
        ap.error(f"--cases: choose from {list(CASES)}")

    build = os.path.abspath(args.build_dir)
    spinel_bin = os.path.join(build, "spinel")
    lib_path = os.path.join(build, "libspinel.so")
    for p in (spinel_bin, lib_path):
        if not os.path.exists(p):
            sys.exit(f"error: {p} does not exist (build targets spinel and spinel_c)")
    work_dir = os.path.abspath(args.work_dir)

    import onnxruntime as ort

    load_start = uptime()
    print("load at start:", load_start, flush=True)
    date = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    rows, notes = [], []
    started = time.time()
    for name in cases:
        onnx_path = prune(name, work_dir)
        files, spinels, ort_prep = {}, {}, {}
        for rt in runtimes:
            if rt in SPINEL_CONVERT:
                files[rt] = convert(spinel_bin, onnx_path, rt)
        if SUBJECT in files:
            notes.append(f"{name}: `{SPNL_NAME[SUBJECT]}` runs {layer_summary(spinel_bin, files[SUBJECT])}")
        if REFERENCE in runtimes:
            ort_prep[REFERENCE] = e2e_latency.ort_runner(onnx_path, args.threads)
        if "ORT INT8" in runtimes:
            q_path, per_channel, why = ort_quantize(onnx_path, args.quant_python)
            ort_prep["ORT INT8"] = e2e_latency.ort_runner(q_path, args.threads)
            notes.append(f"{name}: ORT INT8 = quantize_dynamic(weight_type=QInt8, per_channel={per_channel})"
                         + (f" (per_channel=True failed: {why})" if why else ""))
        for rt, spnl in files.items():
            spinels[rt] = e2e_latency.Spinel(lib_path, spnl, args.threads)

        for seq, batch in CASES[name][1]:
            rng = np.random.default_rng(seq * 100 + batch)
            ids = rng.integers(1000, 30000, size=(batch, seq)).astype(np.int64)
            ids[:, 0], ids[:, -1] = 101, 102
            fns = {}
            for rt in runtimes:
                if rt in spinels:
                    call = spinels[rt].prepare(ids)
                    fns[rt] = (lambda c=call: c().reshape(batch, seq, -1))
                else:
                    fns[rt] = ort_prep[rt](ids)
            # Agreement first (copies: spinel reuses its output buffer).
            outs = {rt: np.array(fn(), dtype=np.float32, copy=True) for rt, fn in fns.items()}
            ref = outs.get(REFERENCE, outs.get("spinel FP32"))
            cos = {rt: pooled_cos(o, ref) for rt, o in outs.items()}
            for _ in range(args.warmup):
                for fn in fns.values():
                    fn()
            times = {rt: [] for rt in runtimes}
            for r in range(args.reps):
                order = runtimes[r % len(runtimes):] + runtimes[:r % len(runtimes)]
                if (r // len(runtimes)) % 2 == 1:
                    order = order[::-1]
                for rt in order:
                    time.sleep(args.pause)
                    t0 = time.perf_counter()
                    fns[rt]()
                    times[rt].append((time.perf_counter() - t0) * 1e3)
            subj = times[SUBJECT]
            for rt in runtimes:
                speedup = statistics.median(t / s for t, s in zip(times[rt], subj))
                rows.append(dict(model=name, seq=seq, batch=batch, runtime=rt, t=stats(times[rt]),
                                 speedup=speedup, cos=cos[rt], reps=args.reps))
            line = "  ".join(f"{rt} {statistics.median(times[rt]):.2f} ms" for rt in runtimes)
            print(f"{name} seq {seq} batch {batch}: {line}  ({time.time() - started:.0f} s elapsed)", flush=True)
            for r in rows[-len(runtimes):]:
                print(f"    {r['runtime']:20s} x{r['speedup']:7.2f}  cos(pooled) {r['cos'][0]:.5f}  "
                      f"min token cos {r['cos'][1]:.4f}", flush=True)
        for sp in spinels.values():
            sp.close()
        del spinels, ort_prep, fns
        gc.collect()
    load_end = uptime()
    print("load at end:", load_end, flush=True)

    lines = ["| model | seq | batch | runtime | median (min–max) ms | spinel INT8 sparse is × faster "
             "| cos mean-pooled vs ORT FP32 | min token cos |",
             "|---|---:|---:|---|---:|---:|---:|---:|"]
    goal_lines = []
    for r in rows:
        t = r["t"]
        subj = r["runtime"] == SUBJECT
        rt = f"**{r['runtime']}**" if subj else r["runtime"]
        speedup = "—" if subj else f"{r['speedup']:.2f}"
        lines.append(f"| {r['model']} | {r['seq']} | {r['batch']} | {rt} | {t[0]:.2f} ({t[1]:.2f}–{t[2]:.2f}) "
                     f"| {speedup} | {r['cos'][0]:.5f} | {r['cos'][1]:.4f} |")
        if r["runtime"] in GOALS:
            g = GOALS[r["runtime"]]
            verdict = (f"goal ≥ {g:g}×: {'met' if r['speedup'] >= g else 'NOT met'}" if r["model"] in GOAL_CASES
                       else "no goal set")
            goal_lines.append(f"- {r['model']} seq {r['seq']} batch {r['batch']}: {r['speedup']:.2f}× vs "
                              f"{r['runtime']} ({verdict})")
    table = "\n".join(lines)
    print()
    print(table)
    print()
    print("\n".join(goal_lines))

    if not args.no_write:
        exe = (os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else sys.executable)
        cmd = " ".join(shlex.quote(a) for a in [exe, os.path.relpath(os.path.abspath(__file__), ROOT),
                                                 *sys.argv[1:]])
        section = [
            f"## End-to-end latency, sparse INT8: spinel vs ONNX Runtime FP32 / INT8 ({date})",
            "",
            f"Command (from the repository root): `{cmd}`",
            "",
            f"Machine: {e2e_latency.cpu_name()}, {os.cpu_count()} logical CPUs (shared). "
            f"Load at start: `{load_start}`; at end: `{load_end}`. Threads: {args.threads}. "
            f"ONNX Runtime {ort.__version__} (intra-op {args.threads}, inter-op 1, sequential, ORT_ENABLE_ALL); "
            "spinel through libspinel.so with OMP_WAIT_POLICY=PASSIVE. "
            f"{args.warmup} warm-up runs each, then {args.reps} repetitions per shape; every repetition "
            "runs every runtime once, the order rotating (and reversing) between repetitions, "
            f"{args.pause * 1e3:.0f} ms pause before each timed run. Every sequence is full length. "
            "Models pruned with `tools/prune_bert.py` (4x1 magnitude blocks, per-layer scope, no fine-tuning; "
            "random weights for BERT-base/large, the real weights for MiniLM), opset 17; every runtime "
            "runs the same pruned model. \"× faster\" is the median over repetitions of "
            "t(runtime) / t(spinel INT8 sparse) from the same repetition. Cosines compare each runtime's "
            "last_hidden_state with ORT FP32's (mean-pooled: minimum over the batch; per token: minimum "
            "over all tokens).",
            "",
            *[f"- {n}" for n in notes],
            "",
            table,
            "",
            "Goals (sparse INT8 spinel vs ONNX Runtime on the same pruned model):",
            "",
            *goal_lines,
            "",
        ]
        with open(args.results, "a") as f:
            f.write("\n" + "\n".join(section))
        print(f"\nappended to {args.results}")


if __name__ == "__main__":
    main()

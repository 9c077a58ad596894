#!/usr/bin/env python3
"""End-to-end latency: spinel FP32 vs ONNX Runtime FP32 on the same ONNX file.

Models: the real all-MiniLM-L6-v2 and a randomly initialised BERT-base-sized
BertModel (tools/export_onnx.py --random-config bert-base), both exported at
opset 17 and converted with `spinel convert`. Shapes: seq 128 and 384, batch 1
and 8 (every sequence full length, so ORT needs no padding), 2 threads.

Both runtimes run in this one Python process: spinel through libspinel.so
(ctypes; OMP_WAIT_POLICY=PASSIVE is set before the library is loaded so its
OpenMP workers do not spin between calls), ONNX Runtime with
intra_op_num_threads=2, inter_op_num_threads=1, sequential execution and all
graph optimizations. After a warm-up, every repetition times one spinel run
and one ORT run, alternating which goes first, with a short pause between runs
so neither runtime's idle threads are still spinning when the other starts.
Reported: median/min/max ms per runtime and the median over repetitions of
the per-repetition ratio spinel/ORT (< 1: spinel is faster).

Example:
  .venv/bin/python bench/e2e_latency.py --build-dir build --work-dir work/bench
Results are appended to bench/RESULTS.md (--no-write to skip).
"""

import os

# Must be set before libgomp is loaded (by libspinel.so or anything else).
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import ctypes  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = {
    "minilm": ["--model", "minilm", "--opset", "17"],
    "bert-base": ["--random-config", "bert-base", "--seed", "0", "--opset", "17"],
}


class Spinel:
    """libspinel.so through ctypes: one model, one session."""

    def __init__(self, lib_path, spnl, threads):
        c = ctypes
        self.lib = lib = c.CDLL(lib_path)
        lib.spinel_last_error.restype = c.c_char_p
        lib.spinel_model_load.argtypes = [c.c_char_p, c.POINTER(c.c_void_p)]
        lib.spinel_model_info.argtypes = [c.c_void_p] + [c.POINTER(c.c_int64)] * 3
        lib.spinel_session_create.argtypes = [c.c_void_p, c.c_int, c.POINTER(c.c_void_p)]
        lib.spinel_session_run.argtypes = [c.c_void_p, c.POINTER(c.c_int32), c.POINTER(c.c_int32),
                                           c.POINTER(c.c_int64), c.c_int64, c.POINTER(c.c_float),
                                           c.c_size_t]
        lib.spinel_session_free.argtypes = [c.c_void_p]
        lib.spinel_model_free.argtypes = [c.c_void_p]
        self.model, self.session = c.c_void_p(), c.c_void_p()
        self._check(lib.spinel_model_load(spnl.encode(), c.byref(self.model)))
        h, m, v = c.c_int64(), c.c_int64(), c.c_int64()
        self._check(lib.spinel_model_info(self.model, c.byref(h), c.byref(m), c.byref(v)))
        self.hidden = h.value
        self._check(lib.spinel_session_create(self.model, threads, c.byref(self.session)))

    def _check(self, status):
        if status != 0:
            raise RuntimeError(f"spinel: {self.lib.spinel_last_error().decode()}")

    def prepare(self, ids):
        """ids: [B, S] int array -> a callable that runs the packed batch."""
        c = ctypes
        b, s = ids.shape
        flat = np.ascontiguousarray(ids.reshape(-1), dtype=np.int32)
        offsets = np.arange(0, (b + 1) * s, s, dtype=np.int64)
        out = np.empty((b * s, self.hidden), dtype=np.float32)
        args = (self.session, flat.ctypes.data_as(c.POINTER(c.c_int32)), None,
                offsets.ctypes.data_as(c.POINTER(c.c_int64)), b,
                out.ctypes.data_as(c.POINTER(c.c_float)), out.size)
        run = self.lib.spinel_session_run

        def call():
            self._check(run(*args))
            return out

        call.keep = (flat, offsets, out)
        return call

    def close(self):
        self.lib.spinel_session_free(self.session)
        self.lib.spinel_model_free(self.model)


def ort_runner(onnx_path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path, sess_options=so, providers=["CPUExecutionProvider"])

    def prepare(ids):
        feeds = {"input_ids": ids.astype(np.int64), "attention_mask": np.ones_like(ids, dtype=np.int64),
                 "token_type_ids": np.zeros_like(ids, dtype=np.int64)}
        return lambda: sess.run(["last_hidden_state"], feeds)[0]

    return prepare


def sh(cmd):
    print("+", " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True)


def prepare_model(name, work_dir, spinel_bin):
    d = os.path.join(work_dir, name)
    onnx_path = os.path.join(d, "model.onnx")
    stamp = os.path.join(d, "export-args.json")
    if not (os.path.exists(onnx_path) and os.path.exists(stamp)
            and json.load(open(stamp)) == MODELS[name]):
        os.makedirs(d, exist_ok=True)
        sh([sys.executable, os.path.join(ROOT, "tools", "export_onnx.py"), *MODELS[name], "-o", onnx_path])
        with open(stamp, "w") as f:
            json.dump(MODELS[name], f)
    spnl = os.path.join(d, "model.spnl")
    sh([spinel_bin, "convert", onnx_path, "-o", spnl])  # always with the binary being measured
    return onnx_path, spnl


def stats(xs):
    return statistics.median(xs), min(xs), max(xs)


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"),
                    help="folder with spinel and libspinel.so (default: build)")
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "work", "bench"),
                    help="exports and .spnl files go here (reused if present)")
    ap.add_argument("--models", default="minilm,bert-base")
    ap.add_argument("--seqs", default="128,384")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions per shape (>= 20)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pause", type=float, default=0.05, help="seconds between timed runs")
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    ap.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    if args.reps < 20:
        ap.error("--reps must be at least 20")

    build = os.path.abspath(args.build_dir)
    spinel_bin = os.path.join(build, "spinel")
    lib_path = os.path.join(build, "libspinel.so")
    for p in (spinel_bin, lib_path):
        if not os.path.exists(p):
            sys.exit(f"error: {p} does not exist (build targets spinel and spinel_c)")

    import onnxruntime as ort

    rows = []
    started = time.time()
    for name in args.models.split(","):
        onnx_path, spnl = prepare_model(name, os.path.abspath(args.work_dir), spinel_bin)
        sp = Spinel(lib_path, spnl, args.threads)
        ort_prepare = ort_runner(onnx_path, args.threads)
        for seq in map(int, args.seqs.split(",")):
            for batch in map(int, args.batches.split(",")):
                rng = np.random.default_rng(seq * 100 + batch)
                ids = rng.integers(1000, 30000, size=(batch, seq)).astype(np.int64)
                ids[:, 0], ids[:, -1] = 101, 102
                run_a, run_b = sp.prepare(ids), ort_prepare(ids)
                # Same result first: the comparison is only meaningful if both compute the model.
                diff = float(np.max(np.abs(run_a().reshape(batch, seq, -1) - run_b())))
                for _ in range(args.warmup):
                    run_a()
                    run_b()
                ta, tb = [], []
                for r in range(args.reps):
                    order = [(run_a, ta), (run_b, tb)] if r % 2 == 0 else [(run_b, tb), (run_a, ta)]
                    for fn, acc in order:
                        time.sleep(args.pause)
                        t0 = time.perf_counter()
                        fn()
                        acc.append((time.perf_counter() - t0) * 1e3)
                ratio = statistics.median(a / b for a, b in zip(ta, tb))
                row = dict(model=name, seq=seq, batch=batch, spinel=stats(ta), ort=stats(tb),
                           ratio=ratio, diff=diff, reps=args.reps)
                rows.append(row)
                print(f"{name:9s} seq {seq:3d} batch {batch}: spinel {row['spinel'][0]:8.2f} ms  "
                      f"ORT {row['ort'][0]:8.2f} ms  ratio {ratio:.3f}  (max abs diff {diff:.1e}, "
                      f"{time.time() - started:.0f} s elapsed)", flush=True)
        sp.close()

    header = ("| model | seq | batch | spinel median (min–max) ms | ORT median (min–max) ms "
              "| median ratio spinel/ORT | max abs diff |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        s, o = r["spinel"], r["ort"]
        lines.append(f"| {r['model']} | {r['seq']} | {r['batch']} | {s[0]:.2f} ({s[1]:.2f}–{s[2]:.2f}) "
                     f"| {o[0]:.2f} ({o[1]:.2f}–{o[2]:.2f}) | {r['ratio']:.3f} | {r['diff']:.1e} |")
    table = "\n".join(lines)
    print()
    print(table)

    if not args.no_write:
        cmd = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT)
                                                 if sys.executable.startswith(ROOT) else sys.executable,
                                                 os.path.relpath(os.path.abspath(__file__), ROOT),
                                                 *sys.argv[1:]])
        now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        section = [
            f"## End-to-end latency, FP32: spinel vs ONNX Runtime ({now})",
            "",
            f"Command (from the repository root): `{cmd}`",
            "",
            f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs (shared). Threads: {args.threads}. "
            f"ONNX Runtime {ort.__version__} (intra-op {args.threads}, inter-op 1, sequential, "
            f"ORT_ENABLE_ALL); spinel through libspinel.so with OMP_WAIT_POLICY=PASSIVE. "
            f"{args.warmup} warm-up runs, then {args.reps} repetitions per shape alternating which "
            f"runtime goes first, {args.pause * 1e3:.0f} ms pause before each timed run. "
            "Every sequence is full length (no padding). Ratio < 1 means spinel is faster; it is the "
            "median of the per-repetition ratios. max abs diff compares the two outputs (last_hidden_state).",
            "",
            table,
            "",
        ]
        new = not os.path.exists(args.results)
        with open(args.results, "a") as f:
            if new:
                f.write("# Benchmark results\n\n")
            f.write("\n".join(section) + "\n")
        print(f"\nappended to {args.results}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""One runtime under MLPerf LoadGen, in its own process (and venv): bench/peers/run.py starts it.

Everything timed happens in here: LoadGen issues queries to an in-process SUT, a single
inference thread takes what is queued (up to --max-batch samples, all of the same length)
and runs it as one batch, and LoadGen timestamps issue and completion. SingleStream's one
query at a time runs right in LoadGen's issue call instead, on its thread, and completes
there: a hand-off to the inference thread through a Python queue costs a thread wake-up per
query, the same for every runtime (spinel BERT-base 90% INT8 alternating the two ways on a busy
2-core machine: 4.58 / 4.01 and 4.98 / 4.81 ms p50). Nothing crosses a process boundary per
query; the result is one JSON file (--out).

Scenarios (LoadGen TestMode.PerformanceOnly, its default seeds):
  single   SingleStream: one query at a time; p50 / p90 latency
  offline  Offline: every sample at once; samples/s
  server   Server: Poisson arrivals at a target QPS. First trials at --sweep fractions of the
           Offline throughput (the latency-throughput curve); then for each --budgets B (ms)
           the highest target QPS whose measured p90 latency is <= B, by bisection between
           the trials that passed and failed so far (--server-steps more trials; a trial's
           p90 says pass or fail for every budget); 0 when SingleStream's p90 is over B

--ids: an .npy of token ids [N, S] (every query S tokens), or an .npz of rows of varied lengths
(flat ids and offsets): then SingleStream only, one query per row, and no DeepSparse (static shapes).

Backends (--backend) and what --model names:
  spinel       .spnl file (the Python binding; SPINEL_LIBRARY / PYTHONPATH set by run.py)
  ort          .onnx file (ONNX Runtime, intra-op threads, inter-op 1, sequential, ORT_ENABLE_ALL)
  openvino     .onnx or .xml (OpenVINO, INFERENCE_NUM_THREADS, LATENCY hint, 1 stream)
  ct2          CTranslate2 model folder (Encoder, intra_threads, compute_type from --precision)
  torch        HF model folder (transformers BertModel, torch.set_num_threads, inference_mode)
  deepsparse   .onnx file (compile_model with static shapes [B, S] for B in 1, 2, 4, ... --max-batch)
"""

import argparse
import json
import os
import queue
import sys
import threading
import time

import numpy as np


# ---- backends: load(model, threads, ...) -> predict(ids [B, S] int64) -------------------------

def _onnx_feeds(names, ids):
    feeds = {}
    for n in names:
        if n == "input_ids":
            feeds[n] = ids
        elif n == "attention_mask":
            feeds[n] = np.ones_like(ids)
        elif n == "token_type_ids":
            feeds[n] = np.zeros_like(ids)
        else:
            raise ValueError(f"unexpected model input {n!r}")
    return feeds


def load_spinel(model, threads, args):
    import spinel

    m = spinel.Model(model)
    s = m.session(threads=threads)

    def predict(ids):
        with s.run(ids) as r:
            return r.hidden

    predict.keep = (m, s)
    predict.version = f"spinel {spinel.version()}"
    return predict


def load_ort(model, threads, args):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    out = sess.get_outputs()[0].name

    def predict(ids):
        return sess.run([out], _onnx_feeds(names, ids))[0]

    predict.version = f"onnxruntime {ort.__version__}"
    return predict


def load_openvino(model, threads, args):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                 "NUM_STREAMS": 1})
    names = [i.get_any_name() for i in compiled.inputs]
    req = compiled.create_infer_request()

    def predict(ids):
        res = req.infer(_onnx_feeds(names, ids))
        return res[compiled.outputs[0]]

    predict.version = f"openvino {ov.get_version()}"
    return predict


def load_ct2(model, threads, args):
    import ctranslate2

    enc = ctranslate2.Encoder(model, device="cpu", compute_type=args.precision, intra_threads=threads,
                              inter_threads=1)

    def predict(ids):
        out = enc.forward_batch(ids.tolist())
        return np.asarray(out.last_hidden_state)

    predict.version = f"ctranslate2 {ctranslate2.__version__}"
    return predict


def load_torch(model, threads, args):
    import torch
    from transformers import BertModel

    torch.set_num_threads(threads)
    m = BertModel.from_pretrained(model, local_files_only=True).eval()

    def predict(ids):
        t = torch.from_numpy(ids)
        with torch.inference_mode():
            return m(input_ids=t, attention_mask=torch.ones_like(t),
                     token_type_ids=torch.zeros_like(t)).last_hidden_state.numpy()

    predict.version = f"torch {torch.__version__}"
    return predict


def load_deepsparse(model, threads, args):
    import deepsparse

    seq = args.seq
    sizes = [1]
    while sizes[-1] * 2 <= args.max_batch:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != args.max_batch:
        sizes.append(args.max_batch)
    import shutil
    import tempfile

    import onnx

    n_inputs = len(onnx.load(model, load_external_data=False).graph.input)
    # compile_model with input_shapes REWRITES the ONNX file it is given (static shapes, in
    # place): give it a private copy per batch size, never the shared file.
    tmp = tempfile.mkdtemp(prefix="peers-deepsparse-")
    # (1.7-5 GB per run at BERT-large size: gone when the worker exits.)
    import atexit
    atexit.register(shutil.rmtree, tmp, True)
    engines = {}
    for b in sizes:
        copy = os.path.join(tmp, f"model-b{b}.onnx")
        shutil.copyfile(model, copy)
        engines[b] = deepsparse.compile_model(copy, batch_size=b, num_cores=threads,
                                              input_shapes=[[b, seq]] * n_inputs)

    def predict(ids):
        b = ids.shape[0]
        e = min(s for s in sizes if s >= b)
        x = ids if b == e else np.concatenate([ids, np.repeat(ids[-1:], e - b, axis=0)])
        feeds = [x, np.ones_like(x), np.zeros_like(x)][:n_inputs]
        return engines[e].run(feeds)[0][:b]

    predict.version = f"deepsparse {deepsparse.__version__}"
    return predict


BACKENDS = {"spinel": load_spinel, "ort": load_ort, "openvino": load_openvino, "ct2": load_ct2,
            "torch": load_torch, "deepsparse": load_deepsparse}


# ---- samples of varied lengths ----------------------------------------------------------------

class Ragged:
    """Token id rows of different lengths (an .npz of flat ids and row offsets, as run.py writes it),
    indexed like the [N, S] array: samples[[i]] is one [1, len_i] row; several rows at once are refused."""

    def __init__(self, z):
        self.flat = z["flat"].astype(np.int64)
        self.off = z["offsets"].astype(np.int64)
        self.shape = (len(self.off) - 1, int(np.diff(self.off).max()))

    def __len__(self):
        return self.shape[0]

    def lengths(self):
        return np.diff(self.off).tolist()

    def __getitem__(self, rows):
        rows = list(rows)
        if len(rows) != 1:
            raise ValueError("samples of varied lengths run one at a time (SingleStream)")
        i = rows[0]
        return self.flat[self.off[i]:self.off[i + 1]][None, :]


# ---- the SUT: a queue and one inference thread --------------------------------------------------

class Sut:
    def __init__(self, lg, predict, samples, max_batch, direct=False):
        """direct: every query runs in issue() itself, one sample at a time (SingleStream)."""
        self.lg, self.predict, self.samples, self.max_batch = lg, predict, samples, max_batch
        self.direct = direct
        self.q = queue.Queue()
        self.batches = 0
        self.thread = None
        if not direct:
            self.thread = threading.Thread(target=self._loop, daemon=True)
            self.thread.start()
        self.sut = lg.ConstructSUT(self.issue, self.flush)

    def issue(self, query_samples):
        if self.direct:
            for s in query_samples:
                self.predict(self.samples[[s.index]])
                self.batches += 1
                self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(s.id, 0, 0)])
            return
        for s in query_samples:
            self.q.put((s.id, s.index))

    def flush(self):
        pass

    def _loop(self):
        lg = self.lg
        while True:
            first = self.q.get()
            if first is None:
                return
            items = [first]
            while len(items) < self.max_batch:
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.q.put(None)
                    break
                items.append(nxt)
            ids = self.samples[[i for _, i in items]]
            self.predict(ids)
            self.batches += 1
            lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, 0, 0) for qid, _ in items])

    def close(self):
        if self.thread is not None:
            self.q.put(None)
            self.thread.join()
        self.lg.DestroySUT(self.sut)


def read_detail(logdir):
    """The result_* entries of LoadGen's mlperf_log_detail.txt as a dict."""
    out = {}
    with open(os.path.join(logdir, "mlperf_log_detail.txt")) as f:
        for line in f:
            if not line.startswith(":::MLLOG"):
                continue
            rec = json.loads(line[len(":::MLLOG"):])
            key = rec.get("key", "")
            if key.startswith("result_") or key in ("effective_scenario", "effective_min_duration_ms",
                                                     "effective_min_query_count"):
                out[key] = rec.get("value")
    return out


def percentiles(detail):
    """{"p50": ms, "p90": ms, ...} from LoadGen's result_XX.XX_percentile_latency_ns entries."""
    res = {}
    for k, v in detail.items():
        if k.endswith("_percentile_latency_ns"):
            p = float(k[len("result_"):-len("_percentile_latency_ns")])
            res["p%g" % p] = v / 1e6
    if "result_mean_latency_ns" in detail:
        res["mean"] = detail["result_mean_latency_ns"] / 1e6
    return res


class Runner:
    def __init__(self, lg, predict, samples, args):
        self.lg, self.predict, self.samples, self.args = lg, predict, samples, args
        self.n = 0

    def run(self, scenario, **kw):
        lg, a = self.lg, self.args
        s = lg.TestSettings()
        s.scenario = scenario
        s.mode = lg.TestMode.PerformanceOnly
        for k, v in kw.items():
            setattr(s, k, v)
        self.n += 1
        logdir = os.path.join(a.logdir, f"{self.n:02d}")
        os.makedirs(logdir, exist_ok=True)
        ls = lg.LogSettings()
        ls.log_output.outdir = logdir
        ls.log_output.copy_summary_to_stdout = False
        ls.enable_trace = False
        single = scenario == lg.TestScenario.SingleStream
        sut = Sut(lg, self.predict, self.samples, 1 if single else a.max_batch, direct=single)
        n = len(self.samples)
        qsl = lg.ConstructQSL(n, n, lambda idx: None, lambda idx: None)
        t0 = time.perf_counter()
        lg.StartTestWithLogSettings(sut.sut, qsl, s, ls)
        wall = time.perf_counter() - t0
        sut.close()
        lg.DestroyQSL(qsl)
        d = read_detail(logdir)
        d["wall_s"] = wall
        d["batches"] = sut.batches
        return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", required=True, choices=sorted(BACKENDS))
    ap.add_argument("--model", required=True)
    ap.add_argument("--precision", default="int8", help="ct2 compute_type (default int8)")
    ap.add_argument("--ids", required=True,
                    help=".npy of token ids [N, S] (int64), or .npz of varied-length rows (flat, offsets)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=8, help="samples per batch in Server and Offline")
    ap.add_argument("--scenarios", default="single,offline,server")
    ap.add_argument("--budgets", default="50,20", help="p90 latency budgets in ms for Server")
    ap.add_argument("--single-seconds", type=float, default=5.0)
    ap.add_argument("--single-queries", type=int, default=64)
    ap.add_argument("--offline-seconds", type=float, default=5.0)
    ap.add_argument("--server-seconds", type=float, default=5.0)
    ap.add_argument("--server-queries", type=int, default=32)
    ap.add_argument("--server-steps", type=int, default=3, help="bisection steps per budget")
    ap.add_argument("--sweep", default="0.3,0.6,0.9",
                    help="Server trials at these fractions of the Offline throughput (the plotted curve)")
    ap.add_argument("--max-seconds", type=float, default=20.0,
                    help="LoadGen max_duration_ms of SingleStream and Server runs: slow runtimes stop issuing "
                         "then, with fewer queries than asked")
    ap.add_argument("--logdir", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import mlperf_loadgen as lg

    if args.ids.endswith(".npz"):
        # Varied lengths: one query per sample, SingleStream only (a batch of different lengths would
        # need padding and masks, which the runtimes do not all take alike).
        samples = Ragged(np.load(args.ids))
        scenarios = [x for x in args.scenarios.split(",") if x == "single"]
        if args.backend == "deepsparse":
            raise SystemExit("deepsparse compiles static shapes: not run on varied lengths")
    else:
        samples = np.load(args.ids).astype(np.int64)
        scenarios = args.scenarios.split(",")
    args.seq = samples.shape[1]
    t0 = time.perf_counter()
    predict = BACKENDS[args.backend](args.model, args.threads, args)
    refs = [np.asarray(predict(samples[[i]]), dtype=np.float32) for i in range(2)]
    load_s = time.perf_counter() - t0
    for _ in range(3):  # warm-up, outside LoadGen
        predict(samples[[0]])
        if "offline" in scenarios or "server" in scenarios:
            predict(samples[:args.max_batch])
    result = {"backend": args.backend, "model": args.model, "version": getattr(predict, "version", ""),
              "threads": args.threads, "max_batch": args.max_batch, "seq": args.seq, "samples": len(samples),
              "load_s": load_s, "output_shape": list(refs[0].shape),
              "pooled_first": [r.reshape(r.shape[-2], -1).mean(axis=0).tolist() for r in refs]}
    if isinstance(samples, Ragged):
        result["lengths"] = samples.lengths()
    runner = Runner(lg, predict, samples, args)
    started = time.time()

    def log(msg):
        print(f"[{args.backend} {os.path.basename(args.model)}] {msg} ({time.time() - started:.0f} s)",
              file=sys.stderr, flush=True)

    if "single" in scenarios:
        d = runner.run(lg.TestScenario.SingleStream, min_duration_ms=int(args.single_seconds * 1e3),
                       max_duration_ms=int(args.max_seconds * 1e3),
                       min_query_count=args.single_queries, single_stream_expected_latency_ns=1_000_000)
        result["single"] = {**percentiles(d), "qps": d.get("result_qps_with_loadgen_overhead"),
                            "queries": d.get("result_query_count", None), "raw": d}
        log(f"single-stream p50 {result['single'].get('p50', float('nan')):.2f} ms "
            f"p90 {result['single'].get('p90', float('nan')):.2f} ms")
    if "offline" in scenarios or "server" in scenarios:
        guess = 1e3 / result["single"]["p50"] if "single" in result else 10.0
        d = runner.run(lg.TestScenario.Offline, min_duration_ms=int(args.offline_seconds * 1e3),
                       offline_expected_qps=max(1.0, guess * 1.5))
        result["offline"] = {"samples_per_s": d.get("result_samples_per_second"), "raw": d}
        log(f"offline {result['offline']['samples_per_s']:.1f} samples/s")
    if "server" in scenarios:
        trials = []

        def trial(qps):
            d = runner.run(lg.TestScenario.Server, server_target_qps=float(qps),
                           server_target_latency_ns=int(max(budgets) * 1e6),
                           server_target_latency_percentile=0.9,
                           min_duration_ms=int(args.server_seconds * 1e3), min_query_count=args.server_queries,
                           max_duration_ms=int(args.max_seconds * 1e3))
            t = {"target_qps": float(qps), **percentiles(d),
                 "scheduled_qps": d.get("result_scheduled_samples_per_sec"),
                 "completed_qps": d.get("result_completed_samples_per_sec"),
                 "loadgen_valid": d.get("result_validity"), "batches": d.get("batches"), "wall_s": d.get("wall_s")}
            trials.append(t)
            log(f"server {qps:.2f} qps: p50 {t.get('p50', 0):.1f} p90 {t.get('p90', 0):.1f} ms")
            return t

        budgets = [float(b) for b in args.budgets.split(",")]
        cap = result["offline"]["samples_per_s"]
        # The curve: fixed fractions of the Offline throughput, whatever the budgets.
        for frac in [float(x) for x in args.sweep.split(",") if x]:
            trial(cap * frac)
        best = {}
        for b in sorted(budgets, reverse=True):
            single_p90 = result.get("single", {}).get("p90")
            if single_p90 is not None and single_p90 > b:
                best[str(int(b))] = 0.0  # one query alone already misses the budget
                log(f"server, p90 <= {b:g} ms: 0 (single-stream p90 {single_p90:.1f} ms)")
                continue
            ok = [t["target_qps"] for t in trials if t["p90"] <= b]
            bad = [t["target_qps"] for t in trials if t["p90"] > b]
            lo = max(ok, default=0.0)
            hi = min([q for q in bad if q > lo], default=cap * 1.1)
            for step in range(args.server_steps):
                if lo > 0 and (hi - lo) / hi < 0.04:
                    break
                q = (lo + hi) / 2 if lo > 0 else hi * 0.25
                t = trial(q)
                if t["p90"] <= b:
                    lo = q
                else:
                    hi = q
            best[str(int(b))] = lo
            log(f"server, p90 <= {b:g} ms: max {lo:.2f} qps")
        result["server"] = {"max_qps": best, "trials": trials}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

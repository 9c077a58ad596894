#!/usr/bin/env python3
"""End-to-end latency, DNABERT-2-117M architecture at 90% 4x1 block sparsity (issue 9):
spinel INT8 sparse and FP32 vs ONNX Runtime FP32 and INT8 on the same pruned ONNX file.

Model: the random-weight 12 x 768 DNABERT-2 checkpoint (tools/dnabert2/make_random_checkpoint.py,
default --checkpoint work/dnabert2/random-117m/hf), every encoder Linear (Wqkv,
attention.output.dense, mlp.gated_layers, mlp.wo) pruned to 90% whole 4x1 blocks (4 consecutive
output channels x 1 input channel, lowest L2 norm, per Linear: the helpers of tools/prune_bert.py;
no fine-tuning, which does not change latency), saved as a checkpoint folder and exported with
tools/dnabert2/export_onnx.py (opset 17); the exported MatMul weights are checked to hold exactly
the intended zero blocks. From that one ONNX file:
  spinel INT8 sparse  spinel convert --tokenizer T --quant int8   (the subject; inspect must
                      report every Linear s8-sparse)
  spinel FP32         spinel convert --tokenizer T
  ORT FP32            the pruned ONNX file itself
  ORT INT8            onnxruntime.quantization.quantize_dynamic(weight_type=QInt8,
                      per_channel=True; per-tensor if that fails), run in --quant-python
                      (ORT 1.19's quantization needs onnx >= 1.13; .venv has Debian's 1.12)

Inputs: generated DNA (tools/dnabert2/gen_dna.py species, seed --seed) tokenized with the
model's tokenizer.json by `spinel tokenize` (the BPE tokenizer tested equal to HF tokenizers);
every runtime gets the same ids.
  1000 bp, batch 1   one sequence (~210 tokens with [CLS] and [SEP])
  1000 bp, batch 8   eight different 1000 bp sequences; spinel runs them as one packed varlen
                     batch, ORT as one batch padded to the longest (attention_mask 0 on the
                     padding, pad id [PAD]) -- how each is used; the padding share is printed
  5000 bp, batch 1   the content ids cut into windows of at most --window tokens with [CLS]/[SEP],
                     neighbours overlapping (window-2)//8 tokens: exactly `spinel run --chunk W`
                     (runtime/util/chunk.cpp, checked below against the CLI's output); spinel
                     runs the windows as one packed batch (as the CLI does), ORT runs them one
                     after another (no padding; cheaper for ORT than a padded batch)
Pooled vector = mean of a sequence's rows (for chunks: the window means averaged, weighted by
window length in tokens, as `spinel run --chunk` does).

Timing: one Python process; spinel through libspinel.so (ctypes, OMP_WAIT_POLICY=PASSIVE),
ORT with intra-op --threads, inter-op 1, sequential, ORT_ENABLE_ALL. After --warmup runs of
each, every round runs every runtime once, the order rotating and reversing between rounds,
--pause before each timed run. Reported: median (min-max) ms per runtime and the median over
rounds of the per-round ratios t(ORT FP32)/t(runtime) and t(ORT INT8)/t(runtime).
Correctness: cosine of each runtime's pooled vector vs ORT FP32 (minimum over the batch), and
the minimum over all tokens of the per-token cosine of last_hidden_state rows vs ORT FP32.

--bert-base DIR adds BERT-base 90% 4x1 (bench/e2e_int8.py's bert-base-90 folder: model.onnx,
int8-sparse.spnl, ort-int8-per-channel.onnx) to the same rounds, on random WordPiece ids of exactly the
same lengths as each non-chunked case: "BERT-base INT8 sparse", "BERT-base ORT FP32", "BERT-base ORT INT8",
their ratios taken against BERT-base's own ORT runs of the same round. That is the goal's comparison
("the same gains as BERT-base at 90%") at the same token counts, on the same machine, at the same time.

Example (from the repository root):
  python3 -m venv work/bench-dnabert2/qvenv && \\
      work/bench-dnabert2/qvenv/bin/pip install onnxruntime==1.19.2 onnx==1.16.2 "numpy<2"
  .venv/bin/python bench/e2e_dnabert2.py --quant-python work/bench-dnabert2/qvenv/bin/python
Writes --json (default work/bench-dnabert2/results.json) and prints a Markdown table.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import e2e_latency  # noqa: E402  (sets OMP_WAIT_POLICY=PASSIVE before any OpenMP library loads)

import argparse  # noqa: E402
import ctypes  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = e2e_latency.ROOT
TOOLS = os.path.join(ROOT, "tools")
DNA_TOOLS = os.path.join(TOOLS, "dnabert2")

SUBJECT = "spinel INT8 sparse"
RUNTIMES = [SUBJECT, "spinel FP32", "ORT FP32", "ORT INT8"]
REFS = ["ORT FP32", "ORT INT8"]
LINEAR_PATHS = ["attention.self.Wqkv", "attention.output.dense", "mlp.gated_layers", "mlp.wo"]
BERT_SUBJECT, BERT_FP32, BERT_INT8 = "BERT-base INT8 sparse", "BERT-base ORT FP32", "BERT-base ORT INT8"
GOAL = 5.0  # x ORT FP32 at 1000 bp (issue 9: "the same gains as BERT-base at 90%")


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


# ---- model preparation ---------------------------------------------------------------

def prune_and_export(checkpoint, tokenizer, sparsity, work_dir):
    """work_dir/model.onnx: the checkpoint with every encoder Linear pruned to `sparsity` 4x1 blocks."""
    onnx_path = os.path.join(work_dir, "model.onnx")
    stamp_path = os.path.join(work_dir, "prune-args.json")
    stamp = {"checkpoint": os.path.abspath(checkpoint), "sparsity": sparsity, "scope": "per-layer",
             "block": "4x1", "opset": 17}
    if os.path.exists(onnx_path) and os.path.exists(stamp_path) and json.load(open(stamp_path)) == stamp:
        return onnx_path
    import torch

    sys.path.insert(0, TOOLS)
    sys.path.insert(0, DNA_TOOLS)
    import prune_bert  # tools/prune_bert.py: 4x1 block helpers
    import model as dm  # tools/dnabert2/model.py

    torch.set_num_threads(os.cpu_count() or 1)
    model = dm.load_folder(checkpoint, classifier=False)
    linears = []
    for i, layer in enumerate(model.bert.encoder.layer):
        for path in LINEAR_PATHS:
            mod = layer
            for part in path.split("."):
                mod = getattr(mod, part)
            linears.append((f"bert.encoder.layer.{i}.{path}", i, path, mod))
    block_masks = prune_bert.compute_block_masks(linears, sparsity, "per-layer")
    prune_bert.apply_masks(linears, {n: prune_bert.expand_mask(m) for n, m in block_masks.items()})
    hf = os.path.join(work_dir, "hf-pruned")
    dm.save_folder(model, hf)
    print(f"pruned {len(linears)} encoder Linears to {sparsity:.0%} 4x1 blocks (per Linear); saved {hf}",
          flush=True)
    e2e_latency.sh([sys.executable, os.path.join(DNA_TOOLS, "export_onnx.py"), hf, "--opset", "17",
                    "--tokenizer", tokenizer, "-o", onnx_path])
    problems, n = prune_bert.verify_onnx(onnx_path, linears, block_masks)
    if problems:
        raise SystemExit("error: " + "; ".join(problems[:5]))
    total = sum(m.numel() for m in block_masks.values())
    zero = sum(int((~m).sum()) for m in block_masks.values())
    print(f"verified {onnx_path}: {n} MatMul weights hold exactly the intended zero 4x1 blocks "
          f"({zero / total:.4f})", flush=True)
    with open(stamp_path, "w") as f:
        json.dump(stamp, f)
    return onnx_path


QUANTIZE = """
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, per_channel=sys.argv[3] == "1")
"""


def ort_quantize(onnx_path, quant_python, feeds):
    """quantize_dynamic next to onnx_path: per-channel if ORT builds and runs it, else per-tensor."""
    import onnxruntime as ort

    d = os.path.dirname(onnx_path)
    why = None
    for per_channel in (True, False):
        out = os.path.join(d, "ort-int8-%s.onnx" % ("per-channel" if per_channel else "per-tensor"))
        try:
            if not (os.path.exists(out) and os.path.getmtime(out) > os.path.getmtime(onnx_path)):
                print(f"+ quantize_dynamic({onnx_path}, {out}, QInt8, per_channel={per_channel})", flush=True)
                p = subprocess.run([quant_python, "-c", QUANTIZE, onnx_path, out, "1" if per_channel else "0"],
                                   capture_output=True, text=True)
                if p.returncode != 0:
                    raise RuntimeError((p.stderr.strip().splitlines() or ["(no output)"])[-1])
            sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
            sess.run(None, feeds)
            del sess
            return out, per_channel, why
        except Exception as e:  # noqa: BLE001 -- report, then fall back to per-tensor
            why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            print(f"ORT INT8 per_channel={per_channel} failed: {why}", flush=True)
            if not per_channel:
                raise


def spinel_convert(spinel_bin, onnx_path, tokenizer, name, extra):
    spnl = os.path.join(os.path.dirname(onnx_path), name)
    if not (os.path.exists(spnl) and os.path.getmtime(spnl) > max(os.path.getmtime(onnx_path),
                                                                   os.path.getmtime(spinel_bin))):
        e2e_latency.sh([spinel_bin, "convert", onnx_path, "--tokenizer", tokenizer, *extra, "-o", spnl])
    return spnl


def linear_precisions(spinel_bin, spnl):
    info = json.loads(subprocess.run([spinel_bin, "inspect", spnl, "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    counts, sparsities = {}, []
    for op in info.get("ops", []):
        if op.get("kind") != "Linear" or op.get("precision") is None:
            continue
        counts[op["precision"]] = counts.get(op["precision"], 0) + 1
        if op.get("block_sparsity") is not None:
            sparsities.append(float(op["block_sparsity"]))
    return counts, sparsities


# ---- inputs ----------------------------------------------------------------------------

def tokenize(spinel_bin, tokenizer, texts):
    p = subprocess.run([spinel_bin, "tokenize", "--tokenizer", tokenizer, "--input", "-"],
                       input="\n".join(texts) + "\n", capture_output=True, text=True, check=True)
    return [json.loads(line)["ids"] for line in p.stdout.splitlines() if line.strip()]


def chunk_windows(ids, window):
    """`spinel run --chunk W` (runtime/util/chunk.cpp): ids with [CLS] ... [SEP] -> windows."""
    cls, content, sep = ids[0], ids[1:-1], ids[-1]
    overlap = (window - 2) // 8
    c = window - 2
    step = c - overlap
    out, b = [], 0
    while True:
        e = min(len(content), b + c)
        out.append([cls, *content[b:e], sep])
        if e == len(content):
            return out
        b += step


# ---- runners: each returns a list of per-sequence [len, H] float arrays ---------------

class SpinelVarlen:
    def __init__(self, lib_path, spnl, threads):
        self.sp = e2e_latency.Spinel(lib_path, spnl, threads)

    def prepare(self, seqs):
        """seqs: list of id lists -> callable running them as one packed batch."""
        c = ctypes
        sp = self.sp
        flat = np.ascontiguousarray(np.concatenate([np.asarray(s) for s in seqs]), dtype=np.int32)
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for s in seqs])
        out = np.empty((len(flat), sp.hidden), dtype=np.float32)
        args = (sp.session, flat.ctypes.data_as(c.POINTER(c.c_int32)), None,
                offsets.ctypes.data_as(c.POINTER(c.c_int64)), len(seqs),
                out.ctypes.data_as(c.POINTER(c.c_float)), out.size)
        run = sp.lib.spinel_session_run

        def call():
            sp._check(run(*args))
            return [out[offsets[i]:offsets[i + 1]] for i in range(len(seqs))]

        call.keep = (flat, offsets, out)
        return call

    def close(self):
        self.sp.close()


class Ort:
    def __init__(self, onnx_path, threads, pad_id):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(onnx_path, sess_options=so, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.sess.get_inputs()}
        self.pad_id = pad_id

    def feeds(self, seqs):
        s = max(len(q) for q in seqs)
        ids = np.full((len(seqs), s), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), s), dtype=np.int64)
        for r, q in enumerate(seqs):
            ids[r, :len(q)] = q
            mask[r, :len(q)] = 1
        f = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        return {k: v for k, v in f.items() if k in self.inputs}

    def prepare(self, seqs, one_by_one=False):
        """padded batch, or (one_by_one) each sequence run alone."""
        lens = [len(q) for q in seqs]
        if one_by_one:
            fs = [self.feeds([q]) for q in seqs]
            return lambda: [self.sess.run(["last_hidden_state"], f)[0][0] for f in fs]
        f = self.feeds(seqs)
        return lambda: [h[:n] for h, n in zip(self.sess.run(["last_hidden_state"], f)[0], lens)]


def pooled(outs):
    """per-sequence [len, H] -> [len(outs), H] row means."""
    return np.stack([o.mean(axis=0) for o in outs])


def chunk_pooled(outs):
    w = np.array([len(o) for o in outs], dtype=np.float64)
    return (pooled(outs).astype(np.float64) * w[:, None]).sum(axis=0, keepdims=True) / w.sum()


def min_cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


# ---- main --------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--work-dir", default=os.path.join(ROOT, "work", "bench-dnabert2"))
    ap.add_argument("--checkpoint", default=os.path.join(ROOT, "work", "dnabert2", "random-117m", "hf"))
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "work", "dnabert2", "tokenizer.json"))
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--quant-python", default=sys.executable,
                    help="Python that runs quantize_dynamic (onnx >= 1.13)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds per case (>= 10)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pause", type=float, default=0.05, help="seconds before each timed run")
    ap.add_argument("--window", type=int, default=512, help="chunk window in tokens (spinel run --chunk W)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", default="1000x1,1000x8,5000x1",
                    help="comma-separated BPxBATCH; a BP over the window runs chunked (batch 1 only)")
    ap.add_argument("--json", default=None, help="results file (default WORK_DIR/results.json)")
    ap.add_argument("--bert-base", default=None, metavar="DIR",
                    help="also time BERT-base 90%% (model.onnx, int8-sparse.spnl, ort-int8-per-channel.onnx in "
                         "DIR) on ids of the same lengths, in the same rounds")
    args = ap.parse_args()
    if args.rounds < 10:
        ap.error("--rounds must be at least 10")

    build = os.path.abspath(args.build_dir)
    spinel_bin, lib_path = os.path.join(build, "spinel"), os.path.join(build, "libspinel.so")
    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    tokenizer = os.path.abspath(args.tokenizer)
    import onnxruntime as ort

    # 1. model files
    onnx_path = prune_and_export(args.checkpoint, tokenizer, args.sparsity, work)
    int8_spnl = spinel_convert(spinel_bin, onnx_path, tokenizer, "int8.spnl", ["--quant", "int8"])
    fp32_spnl = spinel_convert(spinel_bin, onnx_path, tokenizer, "fp32.spnl", [])
    counts, sparsities = linear_precisions(spinel_bin, int8_spnl)
    print(f"int8.spnl Linear ops: {counts}; block sparsity mean {statistics.mean(sparsities or [0]):.3f}",
          flush=True)
    if set(counts) != {"s8-sparse"}:
        raise SystemExit(f"error: {int8_spnl}: not every Linear is s8-sparse: {counts}")

    # 2. inputs
    sys.path.insert(0, DNA_TOOLS)
    import gen_dna

    species = gen_dna.make_species(5, args.seed)
    rng = np.random.default_rng([args.seed, 2024])
    tok = json.load(open(tokenizer))
    vocab = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    pad_id = vocab.get("[PAD]", 0)
    cases = []
    for spec in args.cases.split(","):
        bp, batch = map(int, spec.split("x"))
        seqs = [species[k % len(species)].sample(bp, rng) for k in range(batch)]
        ids = tokenize(spinel_bin, tokenizer, seqs)
        chunked = max(len(i) for i in ids) > args.window
        if chunked and batch != 1:
            raise SystemExit("chunked cases are batch 1 here")
        windows = chunk_windows(ids[0], args.window) if chunked else ids
        cases.append(dict(bp=bp, batch=batch, seqs=seqs, ids=ids, windows=windows, chunked=chunked))
        print(f"{bp} bp x {batch}: tokens {[len(i) for i in ids]}"
              + (f"; {len(windows)} windows of {[len(w) for w in windows]} tokens" if chunked else ""),
              flush=True)

    # 3. runtimes
    probe = Ort(onnx_path, 1, pad_id).feeds([cases[0]["windows"][0]])
    q_path, per_channel, why = ort_quantize(onnx_path, args.quant_python, probe)
    runners = {SUBJECT: SpinelVarlen(lib_path, int8_spnl, args.threads),
               "spinel FP32": SpinelVarlen(lib_path, fp32_spnl, args.threads),
               "ORT FP32": Ort(onnx_path, args.threads, pad_id),
               "ORT INT8": Ort(q_path, args.threads, pad_id)}
    runtimes = list(RUNTIMES)
    bert = {}
    if args.bert_base:
        d = os.path.abspath(args.bert_base)
        for f in ("model.onnx", "int8-sparse.spnl", "ort-int8-per-channel.onnx"):
            if not os.path.exists(os.path.join(d, f)):
                raise SystemExit(f"error: --bert-base {d}: no {f} (make it with bench/e2e_int8.py --cases bert-base-90)")
        bert = {BERT_SUBJECT: SpinelVarlen(lib_path, os.path.join(d, "int8-sparse.spnl"), args.threads),
                BERT_FP32: Ort(os.path.join(d, "model.onnx"), args.threads, 0),
                BERT_INT8: Ort(os.path.join(d, "ort-int8-per-channel.onnx"), args.threads, 0)}
        runners.update(bert)
        runtimes += list(bert)
        bert_rng = np.random.default_rng([args.seed, 30522])

    # The chunking here is the CLI's: spinel run --fasta --chunk W --pool mean on the 5000 bp
    # record must give the pooled vector computed from our windows.
    cli_check = None
    for c in cases:
        if c["chunked"]:
            fa = os.path.join(work, f"seq{c['bp']}.fa")
            with open(fa, "w") as f:
                f.write(f">seq{c['bp']}\n{c['seqs'][0]}\n")
            p = subprocess.run([spinel_bin, "run", int8_spnl, "--fasta", fa, "--chunk", str(args.window),
                                "--pool", "mean", "--threads", str(args.threads)],
                               capture_output=True, text=True, check=True)
            rec = json.loads(p.stdout.splitlines()[0])
            emb = np.array(rec.get("embedding"), dtype=np.float64)[None]
            ours = chunk_pooled(runners[SUBJECT].prepare(c["windows"])())
            cli_check = dict(bp=c["bp"], cli_chunks=rec.get("chunks"), windows=len(c["windows"]),
                             cos=min_cos(emb, ours))
            print(f"spinel run --chunk {args.window} on the {c['bp']} bp record: {rec.get('chunks')} chunks "
                  f"(ours {len(c['windows'])}), cos(CLI pooled, ours) {cli_check['cos']:.7f}", flush=True)

    load_start = uptime()
    print("load at start:", load_start, flush=True)
    started = time.time()
    results = []
    for c in cases:
        fns = {}
        case_rts = list(RUNTIMES) + (list(bert) if not c["chunked"] else [])
        # BERT-base gets random WordPiece ids ([CLS] 101 ... [SEP] 102) of the same lengths.
        bert_windows = [[101, *bert_rng.integers(1000, 30000, size=len(w) - 2).tolist(), 102]
                        for w in c["windows"]] if bert and not c["chunked"] else None
        for rt in case_rts:
            r = runners[rt]
            windows = bert_windows if rt in bert else c["windows"]
            if isinstance(r, Ort):
                fns[rt] = r.prepare(windows, one_by_one=c["chunked"])
            else:
                fns[rt] = r.prepare(windows)
        pool = chunk_pooled if c["chunked"] else pooled
        vecs = {rt: pool([np.array(o, dtype=np.float32) for o in fn()]) for rt, fn in fns.items()}
        cos = {rt: min_cos(v, vecs[BERT_FP32 if rt in bert else "ORT FP32"]) for rt, v in vecs.items()}
        rows = {rt: np.concatenate([np.array(o, dtype=np.float32) for o in fn()]) for rt, fn in fns.items()}
        tok_cos = {rt: min_cos(v, rows[BERT_FP32 if rt in bert else "ORT FP32"]) for rt, v in rows.items()}
        del rows
        for _ in range(args.warmup):
            for fn in fns.values():
                fn()
        times = {rt: [] for rt in case_rts}
        for r in range(args.rounds):
            order = case_rts[r % len(case_rts):] + case_rts[:r % len(case_rts)]
            if (r // len(case_rts)) % 2 == 1:
                order = order[::-1]
            for rt in order:
                time.sleep(args.pause)
                t0 = time.perf_counter()
                fns[rt]()
                times[rt].append((time.perf_counter() - t0) * 1e3)
        tokens = sum(len(w) for w in c["windows"])
        padded = (len(c["windows"]) * max(len(w) for w in c["windows"])) if not c["chunked"] else tokens
        row = dict(bp=c["bp"], batch=c["batch"], chunked=c["chunked"], tokens=tokens, ort_padded_tokens=padded,
                   windows=[len(w) for w in c["windows"]], seq_tokens=[len(i) for i in c["ids"]],
                   runtimes={})
        for rt in case_rts:
            t = times[rt]
            refs = {"ORT FP32": BERT_FP32, "ORT INT8": BERT_INT8} if rt in bert else {r: r for r in REFS}
            row["runtimes"][rt] = dict(
                median_ms=statistics.median(t), min_ms=min(t), max_ms=max(t), times_ms=t,
                x_vs={ref: statistics.median(a / b for a, b in zip(times[src], t)) for ref, src in refs.items()},
                cos_pooled_vs_ort_fp32=cos[rt], min_token_cos_vs_ort_fp32=tok_cos[rt])
        results.append(row)
        print(f"{c['bp']} bp batch {c['batch']}{' chunked' if c['chunked'] else ''} ({tokens} tokens): "
              + "  ".join(f"{rt} {statistics.median(times[rt]):.1f} ms" for rt in case_rts)
              + f"  ({time.time() - started:.0f} s)", flush=True)
    load_end = uptime()
    print("load at end:", load_end, flush=True)
    for r in runners.values():
        if isinstance(r, SpinelVarlen):
            r.close()

    # 4. report
    lines = ["| input | batch | tokens | runtime | median (min–max) ms | × vs ORT FP32 | × vs ORT INT8 "
             "| cos pooled vs ORT FP32 | min token cos |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for row in results:
        inp = f"{row['bp']} bp" + (f", {len(row['windows'])} windows ≤ {args.window}" if row["chunked"] else "")
        tok_s = str(row["tokens"]) + (f" (ORT padded {row['ort_padded_tokens']})"
                                      if row["ort_padded_tokens"] != row["tokens"] else "")
        for rt in RUNTIMES + [b for b in bert if b in row["runtimes"]]:
            d = row["runtimes"][rt]
            bold = rt in (SUBJECT, BERT_SUBJECT)
            name = f"**{rt}**" if bold else rt
            own = {"ORT FP32": BERT_FP32, "ORT INT8": BERT_INT8} if rt in bert else {r: r for r in REFS}
            xs = ["—" if rt == own[ref] else (f"**{d['x_vs'][ref]:.2f}**" if bold else f"{d['x_vs'][ref]:.2f}")
                  for ref in REFS]
            lines.append(f"| {inp} | {row['batch']} | {tok_s} | {name} | {d['median_ms']:.1f} "
                         f"({d['min_ms']:.1f}–{d['max_ms']:.1f}) | {xs[0]} | {xs[1]} "
                         f"| {d['cos_pooled_vs_ort_fp32']:.6f} | {d['min_token_cos_vs_ort_fp32']:.5f} |")
    table = "\n".join(lines)
    print()
    print(table)
    print()
    for row in results:
        s = row["runtimes"][SUBJECT]
        goal = (f" (goal ≥ {GOAL:g}× ORT FP32: {'met' if s['x_vs']['ORT FP32'] >= GOAL else 'NOT met'})"
                if row["bp"] == 1000 else "")
        if BERT_SUBJECT in row["runtimes"]:
            b = row["runtimes"][BERT_SUBJECT]
            print(f"{row['bp']} bp batch {row['batch']}: BERT-base 90% INT8 sparse at the same token counts "
                  f"{b['x_vs']['ORT FP32']:.2f}× its ORT FP32, {b['x_vs']['ORT INT8']:.2f}× its ORT INT8")
        print(f"{row['bp']} bp batch {row['batch']}: spinel INT8 sparse {s['x_vs']['ORT FP32']:.2f}× ORT FP32, "
              f"{s['x_vs']['ORT INT8']:.2f}× ORT INT8{goal}; correctness: cos(spinel INT8 pooled, ORT FP32 "
              f"pooled) = {s['cos_pooled_vs_ort_fp32']:.6f}, min per-token cos {s['min_token_cos_vs_ort_fp32']:.5f}")
    out = args.json or os.path.join(work, "results.json")
    with open(out, "w") as f:
        json.dump(dict(date=datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
                       cpu=e2e_latency.cpu_name(), cpus=os.cpu_count(), load_start=load_start,
                       load_end=load_end, threads=args.threads, rounds=args.rounds, warmup=args.warmup,
                       pause_s=args.pause, onnxruntime=ort.__version__, onnx=onnx_path,
                       ort_int8=dict(path=q_path, per_channel=per_channel, per_channel_failure=why),
                       spinel_int8_linears=counts, spinel_int8_block_sparsity_mean=statistics.mean(sparsities),
                       chunk_cli_check=cli_check, window=args.window, cases=results, table=table,
                       bert_base=args.bert_base),
                  f, indent=1)
        f.write("\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

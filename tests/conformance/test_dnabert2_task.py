"""DNABERT-2 end to end (issue 9): the trained species classifier of tools/dnabert2/train_task.py
(--quick, the `dnabert2_task` fixture of conftest.py, trained once per session and cached in
$SPINEL_TEST_CACHE) converted with its own BPE tokenizer.json and run from FASTA.

* convert: `spinel convert model.onnx --tokenizer tokenizer.json` -> architecture dnabert2,
  tokenizer bpe, outputs include logits; INT8 puts the pruned encoder Linears on s8-sparse.
* FP32: argmax of spinel's logits from `spinel run --fasta heldout.fa` equals PyTorch's
  predictions on the whole held-out set, logits within 1e-4 (dense and pruned models).
* INT8 (pruned, --quant int8, sparse auto): accuracy within 1 point of the pruned model's
  PyTorch FP32 accuracy.
* A 5000 bp record (~1070 tokens) through a small random model of tools/dnabert2 with DNABERT-2's
  512-token limit and vocabulary size: an error naming it and its token length without --chunk,
  windows with --chunk max. (The 12 x 768 model is checked against ONNX Runtime in test_dnabert2.py.)
* The C API: a C program tokenizes with spinel_tokenize, runs, reads spinel_session_pooled
  "logits" -- the same logits as the CLI.

Every spinel run covers the whole held-out set once per model (module fixtures).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "dnabert2"
THREADS = ("--threads", "2")
LOGIT_ATOL = 1e-4  # spinel FP32 vs PyTorch FP32 (predictions.json), absolute
CAPI_ATOL = 1e-5  # C API vs CLI, same .spnl, different batching


def read_rows(stdout):
    rows = sorted((json.loads(line) for line in stdout.splitlines() if line.strip()), key=lambda r: r["index"])
    assert [r["index"] for r in rows] == list(range(len(rows)))
    return rows


@pytest.fixture(scope="module")
def task(dnabert2_task):
    out = dnabert2_task
    return {
        "dir": out,
        "summary": json.loads((out / "summary.json").read_text()),
        "heldout": json.loads((out / "heldout.json").read_text()),
        "pred": {m: json.loads((out / m / "predictions.json").read_text()) for m in ("dense", "pruned")},
    }


@pytest.fixture(scope="module")
def models(spinel, task, tmp_path_factory):
    """name -> (.spnl, inspect --json); converted afresh with the task's BPE tokenizer.json."""
    d = tmp_path_factory.mktemp("dnabert2-task")
    out = {}
    for name, src, flags in (("dense", "dense", ()), ("pruned", "pruned", ()),
                             ("pruned_int8", "pruned", ("--quant", "int8"))):
        folder = task["dir"] / src
        spnl = d / f"{name}.spnl"
        p = spinel.cli("convert", folder / "model.onnx", "--tokenizer", folder / "tokenizer.json", "-o", spnl, *flags)
        info = json.loads(spinel.cli("inspect", spnl, "--json").stdout)
        out[name] = (spnl, info, p.stdout + p.stderr)
    return out


@pytest.fixture(scope="module")
def cli_rows(spinel, task, models):
    """name -> JSON rows of `spinel run --fasta heldout.fa` (one run per model)."""
    out = {}
    for name, (spnl, _, _) in models.items():
        t0 = time.perf_counter()
        p = spinel.cli("run", spnl, "--fasta", task["dir"] / "heldout.fa", *THREADS)
        out[name] = read_rows(p.stdout)
        print(f"{name}: spinel run --fasta on {len(out[name])} records: {time.perf_counter() - t0:.2f} s")
    return out


def test_convert_with_bpe_tokenizer(models, task):
    labels = task["summary"]["config"]["num_labels"]
    for name, (_, info, log) in models.items():
        assert info["config"]["architecture"] == "dnabert2", name
        assert info["tokenizer"]["type"] == "bpe", (name, info["tokenizer"])
        assert info["tokenizer"]["vocab_size"] == task["summary"]["config"]["vocab_size"]
        assert "logits" in info["outputs"], (name, info["outputs"])
        assert info["config"]["default_pool"] == "logits"
        assert info["config"]["num_heads"] == task["summary"]["config"]["num_attention_heads"]
        assert any(o["kind"] == "Attention" and "alibi" in o["kernel"] for o in info["ops"]), name
        assert "ALiBi" in log, log
    # The classifier head: pooler dense + classifier to num_labels.
    shapes = {t["name"]: t["shape"] for t in models["dense"][1]["tensors"]}
    assert shapes["logits.weight"][-1] == labels


def test_tokens_equal_hf(task, cli_rows):
    """The record's token count (with [CLS] and [SEP]) is HF tokenizers' on the same tokenizer.json."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(task["dir"] / "dense" / "tokenizer.json"))
    want = [len(e.ids) for e in tok.encode_batch(task["heldout"]["sequences"])]
    for name, rows in cli_rows.items():
        assert [r["tokens"] for r in rows] == want, name


@pytest.mark.parametrize("name", ["dense", "pruned"])
def test_fp32_predictions_equal_pytorch(task, cli_rows, name):
    held, pred = task["heldout"], task["pred"][name]
    rows = cli_rows[name]
    assert len(rows) == len(held["sequences"]) == len(pred["predictions"])
    assert [r["name"] for r in rows] == [f"heldout{i}" for i in range(len(rows))]
    assert [r["length"] for r in rows] == [len(s) for s in held["sequences"]]
    logits = np.asarray([r["logits"] for r in rows], dtype=np.float64)
    probs = np.asarray([r["probabilities"] for r in rows], dtype=np.float64)
    ref = np.asarray(pred["logits"], dtype=np.float64)
    assert logits.shape == ref.shape
    diff = np.abs(logits - ref).max()
    acc = float(np.mean(logits.argmax(1) == np.asarray(held["labels"])))
    print(f"{name} FP32: max |logit diff| vs PyTorch {diff:.2e}; accuracy spinel {acc:.3f}, "
          f"PyTorch {pred['accuracy']:.3f}")
    assert logits.argmax(1).tolist() == pred["predictions"]
    assert diff <= LOGIT_ATOL
    assert acc == pytest.approx(pred["accuracy"])
    e = np.exp(ref - ref.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), atol=1e-5)


def test_int8_sparse_accuracy(task, models, cli_rows):
    info = models["pruned_int8"][1]
    enc = [o for o in info["ops"] if o["kind"] == "Linear" and "/encoder/" in o["name"]]
    assert len(enc) == 4 * task["summary"]["config"]["num_hidden_layers"]
    for o in enc:
        assert o["precision"] == "s8-sparse" and o["runs_here"] == "s8-sparse", o
        assert o["block_sparsity"] == pytest.approx(task["pred"]["pruned"]["block_sparsity"], abs=0.01), o
    rows = cli_rows["pruned_int8"]
    labels = np.asarray(task["heldout"]["labels"])
    logits = np.asarray([r["logits"] for r in rows], dtype=np.float64)
    acc = float(np.mean(logits.argmax(1) == labels))
    fp32 = task["summary"]["results"]["pruned"]["accuracy"]
    ref = np.asarray(task["pred"]["pruned"]["logits"])
    agree = float(np.mean(logits.argmax(1) == ref.argmax(1)))
    print(f"pruned ({task['pred']['pruned']['block_sparsity']:.0%} 4x1 blocks): PyTorch FP32 accuracy {fp32:.3f}, "
          f"spinel INT8 {acc:.3f}; INT8 agrees with FP32 on {agree:.1%}; "
          f"max |logit diff| {np.abs(logits - ref).max():.3f}")
    assert abs(acc - fp32) <= 0.01


# ---- a long record past the 512-token limit --------------------------------------------------

@pytest.fixture(scope="module")
def random_small(spinel, task, model_cache, tmp_path_factory):
    """A 2 x 128 random checkpoint of tools/dnabert2 (seed 0; vocab 4096 and the 512-token limit
    of DNABERT-2) exported encoder-only (cached), converted with the task's BPE tokenizer."""
    folder = model_cache / "dnabert2-random-2x128"
    onnx_path = folder / "model.onnx"
    if not onnx_path.exists():
        if folder.exists():
            shutil.rmtree(folder)
        for cmd in ([TOOLS / "make_random_checkpoint.py", "--layers", "2", "--hidden", "128", "--heads", "4",
                     "--intermediate", "256", "-o", folder / "hf"],
                    [TOOLS / "export_onnx.py", folder / "hf", "--opset", "17", "-o", folder / "tmp.onnx"]):
            subprocess.run([sys.executable, *map(str, cmd)], check=True, capture_output=True, timeout=1800)
        os.replace(folder / "tmp.onnx", onnx_path)  # complete files only
    spnl = tmp_path_factory.mktemp("dnabert2-small") / "random-2x128.spnl"
    spinel.cli("convert", onnx_path, "--tokenizer", task["dir"] / "tokenizer.json", "-o", spnl)
    info = json.loads(spinel.cli("inspect", spnl, "--json").stdout)
    assert info["config"]["max_position"] == 512, info["config"]
    return spnl


def test_long_record_needs_chunk(spinel, task, random_small, tmp_path):
    sys.path.insert(0, str(TOOLS))
    import gen_dna

    (seq, _), = gen_dna.corpus(1, 5000, 5000, n_species=5, seed=11)
    from tokenizers import Tokenizer
    n = len(Tokenizer.from_file(str(task["dir"] / "tokenizer.json")).encode(seq).ids)
    assert n > 1000, n  # ~213 tokens per 1000 bp: over the 512 limit
    fa = tmp_path / "long.fa"
    lines = [seq[i:i + 70] for i in range(0, len(seq), 70)]
    fa.write_text(">short ok\n" + seq[:300].lower() + "\n>chr_long synthetic 5 kb\n" + "\n".join(lines) + "\n")

    p = spinel.cli("run", random_small, "--fasta", fa, *THREADS, check=False)
    assert p.returncode == 1 and p.stdout == "", p.stderr
    err = p.stderr.strip()
    print(err)
    for needle in ("'chr_long'", f"{n} tokens", "5000 bp", "512", "line 3", "--chunk"):
        assert needle in err, needle

    t0 = time.perf_counter()
    p = spinel.cli("run", random_small, "--fasta", fa, "--chunk", "max", *THREADS)
    rows = read_rows(p.stdout)
    print(f"--chunk max, 2 records (300 bp, 5000 bp): {time.perf_counter() - t0:.1f} s; "
          f"chunks {[r['chunks'] for r in rows]}")
    assert [r["name"] for r in rows] == ["short", "chr_long"]
    assert rows[0]["chunks"] == 1 and rows[1]["chunks"] > 1
    assert rows[1]["tokens"] == n and rows[1]["length"] == 5000
    for r in rows:
        e = np.asarray(r["embedding"])
        assert e.shape == (128,) and np.all(np.isfinite(e)) and np.abs(e).max() > 0


# ---- the C API -------------------------------------------------------------------------------

C_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "spinel/spinel.h"
#define CHECK(x) do { if ((x) != SPINEL_OK) { fprintf(stderr, "%s: %s\n", #x, spinel_last_error()); return 1; } } while (0)
/* argv: model.spnl sequences.txt (one per line) batch_size -> per sequence "tokens logit..." */
int main(int argc, char** argv) {
  if (argc != 4) return 2;
  spinel_model_t m; spinel_session_t s;
  CHECK(spinel_model_load(argv[1], &m));
  int64_t hidden, max_tokens, vocab;
  CHECK(spinel_model_info(m, &hidden, &max_tokens, &vocab));
  CHECK(spinel_session_create(m, 2, &s));
  FILE* f = fopen(argv[2], "r");
  if (!f) return 3;
  int batch = atoi(argv[3]);
  static char line[1 << 16];
  int32_t* ids = malloc(sizeof(int32_t) * (size_t)max_tokens * batch);
  int64_t* off = malloc(sizeof(int64_t) * (batch + 1));
  float* hid = malloc(sizeof(float) * (size_t)max_tokens * batch * hidden);
  float logits[4096];
  int n = 0, done = 0;
  off[0] = 0;
  for (;;) {
    int eof = !fgets(line, sizeof line, f);
    if (!eof) {
      line[strcspn(line, "\r\n")] = 0;
      size_t count;
      CHECK(spinel_tokenize(m, line, 0, ids + off[n], (size_t)max_tokens, &count));
      off[n + 1] = off[n] + (int64_t)count;
      n++;
    }
    if (n == batch || (eof && n > 0)) {
      int64_t width = 0;
      CHECK(spinel_session_run(s, ids, NULL, off, n, hid, (size_t)off[n] * hidden));
      CHECK(spinel_session_pooled(s, "logits", 0, logits, sizeof logits / sizeof *logits, &width));
      for (int i = 0; i < n; i++) {
        printf("%lld", (long long)(off[i + 1] - off[i]));
        for (int64_t j = 0; j < width; j++) printf(" %.9g", logits[i * width + j]);
        printf("\n");
      }
      done += n; n = 0;
    }
    if (eof) break;
  }
  fprintf(stderr, "%d sequences\n", done);
  spinel_session_free(s);
  spinel_model_free(m);
  fclose(f);
  return 0;
}
"""


def test_c_api_logits(spinel, task, models, cli_rows, tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (tools/setup.sh installs build-essential)"
    src = tmp_path / "logits.c"
    src.write_text(C_PROGRAM)
    exe = tmp_path / "logits"
    p = subprocess.run([cc, "-std=c99", "-Wall", "-Werror", str(src), "-I", str(ROOT / "runtime" / "include"),
                        "-L", spinel.build_dir, "-lspinel", f"-Wl,-rpath,{spinel.build_dir}", "-o", str(exe)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    seqs = tmp_path / "seqs.txt"
    seqs.write_text("\n".join(task["heldout"]["sequences"]) + "\n")
    for name in ("dense", "pruned_int8"):
        p = subprocess.run([str(exe), str(models[name][0]), str(seqs), "64"], capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stderr
        out = [list(map(float, line.split())) for line in p.stdout.splitlines()]
        rows = cli_rows[name]
        assert len(out) == len(rows)
        assert [int(o[0]) for o in out] == [r["tokens"] for r in rows]
        got = np.asarray([o[1:] for o in out])
        want = np.asarray([r["logits"] for r in rows])
        diff = np.abs(got - want).max()
        print(f"{name}: C API (batches of 64) vs CLI logits, max |diff| {diff:.2e}")
        assert got.shape == want.shape and diff <= CAPI_ATOL
        if name == "dense":
            np.testing.assert_allclose(got, np.asarray(task["pred"]["dense"]["logits"]), atol=LOGIT_ATOL)

"""DNABERT-2 (models/dnabert2/): spinel vs ONNX Runtime on DNABERT-2-architecture exports.

Exports: tests/conformance/dnabert2_test_export.py builds graphs with random weights (a small
model with 6 heads (not a power of two), one with 3 heads and a classifier, the 12 x 768
full-size one) and the deliberately wrong ones the recogniser must refuse (a wrong slope, an
asymmetric bias, a fixed-length bias); the project's own tools/dnabert2 scripts (real parameter
names, the path a user with the real checkpoint takes) export two more, tested the same way.

The BPE tokenizer is not part of this module: the .spnl is converted with a WordPiece
vocab.txt of specials + A/C/G/T k-mers (as many entries as the model's vocabulary), and
token ids are fed with `spinel run --ids`.
"""

import itertools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

HERE = pathlib.Path(__file__).resolve().parent
EXPORT = HERE / "dnabert2_test_export.py"
THREADS = ["--threads", "2"]

CONFIGS = {
    "h6": ["--layers", "2", "--hidden", "96", "--heads", "6", "--intermediate", "160", "--vocab", "300"],
    "h3_cls": ["--layers", "3", "--hidden", "48", "--heads", "3", "--intermediate", "72", "--vocab", "200",
               "--classes", "3", "--opset", "17"],
    "full": ["--layers", "12", "--hidden", "768", "--heads", "12", "--intermediate", "3072", "--vocab", "4096",
             "--classes", "2"],
    "pruned": ["--layers", "2", "--hidden", "128", "--heads", "4", "--intermediate", "256", "--vocab", "300",
               "--sparsity", "0.85", "--classes", "2"],
}
LENGTHS = [1, 2, 7, 40, 130, 3, 64]


@pytest.fixture(scope="session")
def dna_dir(tmp_path_factory):
    cache = os.environ.get("SPINEL_TEST_CACHE")
    d = pathlib.Path(cache) / "dnabert2" if cache else tmp_path_factory.mktemp("dnabert2")
    d.mkdir(parents=True, exist_ok=True)
    return d


def export(dna_dir, name, *extra):
    out = dna_dir / name
    if not (out / "model.onnx").exists():
        args = CONFIGS.get(name.split("-")[0], CONFIGS["h6"]) + list(extra)
        p = subprocess.run([sys.executable, str(EXPORT), "--out", str(out), *args], capture_output=True, text=True,
                           timeout=1200)
        assert p.returncode == 0, p.stderr[-3000:]
    return out / "model.onnx"


def vocab_file(dna_dir, size):
    path = dna_dir / f"vocab{size}.txt"
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for k in itertools.count(1):
        toks += ["".join(p) for p in itertools.product("ACGT", repeat=k)]
        if len(toks) >= size:
            break
    path.write_text("\n".join(toks[:size]) + "\n")
    return path


def onnx_vocab(onnx_path):
    import onnx
    m = onnx.load(str(onnx_path), load_external_data=False)
    for t in m.graph.initializer:
        if t.name.startswith("word") or "word_embeddings" in t.name:
            return t.dims[0]
    raise AssertionError("no word table")


def convert(spinel, dna_dir, onnx_path, out_name, *flags):
    spnl = dna_dir / f"{out_name}.spnl"
    vocab = vocab_file(dna_dir, onnx_vocab(onnx_path))
    p = subprocess.run([spinel.bin, "convert", str(onnx_path), "--tokenizer", str(vocab), "-o", str(spnl), *flags],
                       capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, f"convert {onnx_path} failed:\n{p.stderr[-4000:]}"
    return spnl


def run(spinel, spnl, id_lists, pool="none", backend=None):
    args = [spinel.bin, "run", str(spnl), "--pool", pool, *THREADS]
    if backend:
        args += ["--backend", backend]
    for ids in id_lists:
        args += ["--ids", ",".join(map(str, ids))]
    p = subprocess.run(args, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = sorted((json.loads(line) for line in p.stdout.splitlines() if line.strip()), key=lambda r: r["index"])
    key = "last_hidden_state" if pool == "none" else "embedding"
    return [np.asarray(r[key], dtype=np.float64) for r in rows]


def make_ids(vocab, lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [[2] + list(rng.integers(5, vocab, size=max(0, n - 2))) + ([3] if n >= 2 else []) for n in lengths]


def ort_outputs(onnx_path, ids, mask=None):
    s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    a = np.asarray(ids, dtype=np.int64)
    feeds = {"input_ids": a, "attention_mask": np.ones_like(a) if mask is None else mask,
             "token_type_ids": np.zeros_like(a)}
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, {i.name: feeds[i.name] for i in s.get_inputs()})))


def check_fp32(spinel, dna_dir, onnx_path, name, lengths, backend=None):
    spnl = convert(spinel, dna_dir, onnx_path, name)
    vocab = onnx_vocab(onnx_path)
    ids = make_ids(vocab, lengths)
    got = run(spinel, spnl, ids, backend=backend)
    worst = 0.0
    for g, i in zip(got, ids):
        want = ort_outputs(onnx_path, [i])["last_hidden_state"][0]
        assert g.shape == want.shape
        worst = max(worst, float(np.abs(g - want).max()))
    assert worst <= 1e-4, f"{name}: max |spinel - ORT| {worst}"
    # A padded ORT batch (the mask path) agrees on the real tokens.
    L = max(len(i) for i in ids)
    padded = np.zeros((len(ids), L), dtype=np.int64)
    mask = np.zeros_like(padded)
    for r, i in enumerate(ids):
        padded[r, :len(i)] = i
        mask[r, :len(i)] = 1
    want = ort_outputs(onnx_path, padded, mask)["last_hidden_state"]
    for r, (g, i) in enumerate(zip(got, ids)):
        assert np.abs(g - want[r, :len(i)]).max() <= 1e-4
    # The packed varlen batch equals one-by-one runs.
    for g, i in zip(got, ids):
        one = run(spinel, spnl, [i], backend=backend)[0]
        assert np.abs(one - g).max() <= 1e-5
    return spnl, ids, got, worst


@pytest.mark.parametrize("name", ["h6", "h3_cls"])
def test_small_fp32_vs_ort(spinel, dna_dir, name):
    check_fp32(spinel, dna_dir, export(dna_dir, name), name, LENGTHS)


def test_small_reference_backend_vs_ort(spinel, dna_dir):
    check_fp32(spinel, dna_dir, export(dna_dir, "h6"), "h6_ref", [1, 9, 33], backend="reference")


def test_logits_vs_ort(spinel, dna_dir):
    onnx_path = export(dna_dir, "h3_cls")
    spnl = convert(spinel, dna_dir, onnx_path, "h3_cls_logits")
    ids = make_ids(200, [1, 5, 17, 60])
    got = run(spinel, spnl, ids, pool="logits")
    pooled = run(spinel, spnl, ids, pool="pooler_output")
    for g, p, i in zip(got, pooled, ids):
        o = ort_outputs(onnx_path, [i])
        assert g.shape == (3,)
        assert np.abs(g - o["logits"][0]).max() <= 1e-4
        assert np.abs(p - o["pooler_output"][0]).max() <= 1e-4
    info = subprocess.run([spinel.bin, "inspect", str(spnl)], capture_output=True, text=True)
    assert info.returncode == 0 and "dnabert2" in info.stdout.lower()


def test_full_size_fp32_vs_ort(spinel, dna_dir):
    # 12 x 768, 12 heads (slopes 2^-1..2^-8 then the odd powers of 2^-0.5), past 512 is refused
    # by config.json's max_position_embeddings.
    check_fp32(spinel, dna_dir, export(dna_dir, "full"), "full", [1, 7, 200, 512, 33])


@pytest.mark.parametrize("sparse", ["auto", "off"])
def test_int8_close_to_fp32(spinel, dna_dir, sparse):
    onnx_path = export(dna_dir, "pruned")
    fp32 = convert(spinel, dna_dir, onnx_path, "pruned_f32")
    q = convert(spinel, dna_dir, onnx_path, f"pruned_int8_{sparse}", "--quant", "int8", "--sparse", sparse)
    info = subprocess.run([spinel.bin, "inspect", str(q)], capture_output=True, text=True).stdout
    assert ("s8-sparse" in info) == (sparse == "auto"), info
    ids = make_ids(300, [1, 9, 70, 130])
    a = run(spinel, fp32, ids)
    b = run(spinel, q, ids)
    for x, y in zip(a, b):
        cos = (x * y).sum(-1) / (np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1))
        assert cos.min() >= 0.98, cos.min()
    la = run(spinel, fp32, ids, pool="logits")
    lb = run(spinel, q, ids, pool="logits")
    assert all(np.argmax(x) == np.argmax(y) or np.abs(x - y).max() < 0.05 for x, y in zip(la, lb))


@pytest.mark.parametrize("variant,reason", [
    ("wrong", "slope"),
    ("asym", "not symmetric"),
    ("buffer", "at length 513"),
])
def test_not_alibi_is_rejected(spinel, dna_dir, variant, reason):
    flags = {"wrong": ["--wrong-slope"], "asym": ["--asymmetric"], "buffer": ["--alibi-form", "buffer"]}[variant]
    onnx_path = export(dna_dir, f"h6-{variant}", *flags)
    vocab = vocab_file(dna_dir, 300)
    p = subprocess.run([spinel.bin, "convert", str(onnx_path), "--tokenizer", str(vocab), "-o",
                        str(dna_dir / f"bad-{variant}.spnl")], capture_output=True, text=True, timeout=600)
    assert p.returncode != 0
    assert reason in p.stderr, p.stderr[-3000:]


TOOLS = pathlib.Path(__file__).resolve().parents[2] / "tools" / "dnabert2"


def project_export(dna_dir, opset, classifier):
    """A small random checkpoint with the real DNABERT-2 parameter names (6 heads: not a power
    of two), exported by the project's own tools/dnabert2 scripts (the path a user with the
    real checkpoint takes)."""
    name = f"proj-{'cls' if classifier else 'enc'}-{opset}"
    out = dna_dir / name / "model.onnx"
    if not out.exists():
        hf = dna_dir / name / "hf"
        args = ["--layers", "2", "--hidden", "288", "--heads", "6", "--intermediate", "576",
                "--vocab", "300", "--seed", "3", "-o", str(hf)]
        if classifier:
            args[-2:-2] = ["--classifier", "3"]
        subprocess.run([sys.executable, str(TOOLS / "make_random_checkpoint.py"), *args], check=True,
                       capture_output=True, text=True, timeout=600)
        subprocess.run([sys.executable, str(TOOLS / "export_onnx.py"), str(hf), "-o", str(out),
                        "--opset", str(opset)], check=True, capture_output=True, text=True, timeout=900)
    return out


@pytest.mark.parametrize("opset,classifier", [(14, False), (17, True)])
def test_project_exports_fp32_vs_ort(spinel, dna_dir, opset, classifier):
    onnx_path = project_export(dna_dir, opset, classifier)
    name = "proj-" + onnx_path.parent.name + "-" + onnx_path.stem
    spnl, ids, _, _ = check_fp32(spinel, dna_dir, onnx_path, name, [1, 7, 65, 200])
    outputs = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_outputs()
    if "logits" in [o.name for o in outputs]:
        got = run(spinel, spnl, ids, pool="logits")
        for g, i in zip(got, ids):
            assert np.abs(g - ort_outputs(onnx_path, [i])["logits"][0]).max() <= 1e-4

"""The ONNX files users bring besides a plain opset-14/17 export (issue 8, item 5).

Files are made by tools/export_variants.py (cached like conftest's `export`):

  * opsets 11..18 of MiniLM (real weights): converted, and spinel vs ONNX
    Runtime on the same file: max abs diff <= 1e-4 on last_hidden_state;
  * float16 files (ONNX Runtime's float16 converter, keep_io_types True and
    False; the latter has the shape of a torch `model.half()` export):
      - vs ONNX Runtime on the same file widened to f32 in Python (every
        FLOAT16 initializer, Constant and Cast target made FLOAT: the same
        weights, f32 arithmetic; GELU's sqrt(2) back in f32): <= 1e-4, the
        FP32 bar;
      - vs ONNX Runtime running the fp16 file itself (fp16 activations):
        <= FP16_TOL (1e-2), and mean-pooled cosine >= 0.99999;
      - vs ONNX Runtime on the original f32 export (the weights lose ~3
        decimal digits): <= FP16_TOL, cosine >= 0.99999;
      - `--quant int8` from the widened weights: cosine >= 0.99 vs the f32 export;
  * files spinel refuses, with a message < 2 KB that names the fix: ONNX
    Runtime-optimized (com.microsoft fused ops), quantize_dynamic, RoBERTa
    (config.json beside it), a BPE tokenizer.json (told before any graph work).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from test_minilm_conformance import compare, cosine, ort_unpadded

ROOT = pathlib.Path(__file__).resolve().parents[2]
VARIANTS = ROOT / "tools" / "export_variants.py"
OPSETS = list(range(11, 19))
HIDDEN_TOL = 1e-4
# ONNX Runtime computes a float16 file in float16 (MatMul, LayerNorm, Softmax):
# MiniLM's hidden states (|x| up to ~10) then carry a few 1e-3 of rounding
# (measured: 3.9e-3 vs spinel, 4.3e-3 vs the f32 export, on these sentences).
FP16_TOL = 1e-2
FP16_COS = 0.99999
MAX_MESSAGE = 2048


@pytest.fixture(scope="module")
def variant(model_cache):
    """variant(form, *args) -> path of model.onnx made by export_variants.py."""
    done = {}

    def _make(form, *args):
        key = (form,) + tuple(args)
        if key in done:
            return done[key]
        name = "variant-" + "-".join([form, *map(str, args)])
        folder = model_cache / name
        onnx_path = folder / "model.onnx"
        stamp = folder / "export-args.json"
        argv = [form, *map(str, args)]
        if not (stamp.exists() and json.loads(stamp.read_text()) == argv and onnx_path.exists()):
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            p = subprocess.run([sys.executable, str(VARIANTS), *argv, "-o", str(onnx_path)],
                               capture_output=True, text=True, timeout=900)
            if p.returncode != 0:
                pytest.fail(f"export_variants.py {' '.join(argv)} failed ({p.returncode}):\n"
                            f"{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
            stamp.write_text(json.dumps(argv))
        done[key] = onnx_path
        return onnx_path

    return _make


@pytest.fixture(scope="module")
def ids(hf_ids):
    """A spread of the test sentences: empty, short, typical, long (> 250 tokens)."""
    order = sorted(range(len(hf_ids)), key=lambda i: len(hf_ids[i]))
    pick = sorted({order[0], order[1], order[len(order) // 4], order[len(order) // 2],
                   order[3 * len(order) // 4], order[-3], order[-2], order[-1]})
    return [hf_ids[i] for i in pick]


def run_spinel(spinel, spnl, id_lists):
    return spinel.run_ids(spnl, id_lists, "none", ["--batch-size", "64", "--threads", "2"])


# ---- opsets 11..18 --------------------------------------------------------------------

@pytest.mark.parametrize("opset", OPSETS)
def test_opset_converts_and_matches_ort(opset, spinel, variant, ids, tmp_path):
    import onnx

    onnx_path = variant("opset", "--opset", opset)
    m = onnx.load(str(onnx_path), load_external_data=False)
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    ops = {n.op_type: n for n in m.graph.node}
    # The files really have the forms of their opset.
    if opset >= 13:
        assert all(len(n.input) == 2 for n in m.graph.node if n.op_type == "Unsqueeze"), \
            "Unsqueeze axes should be an input from opset 13"
    else:
        assert all(any(a.name == "axes" for a in n.attribute)
                   for n in m.graph.node if n.op_type == "Unsqueeze")
    if opset >= 18:
        assert "ReduceMean" in ops and len(ops["ReduceMean"].input) == 2, \
            "the opset-18 file should have ReduceMean with its axes as an input"
    assert ("LayerNormalization" in ops) == (opset >= 17)

    spnl = tmp_path / "m.spnl"
    p = spinel.convert(onnx_path, spnl)
    assert f"opset {opset}," in p.stderr, p.stderr
    got = run_spinel(spinel, spnl, ids)
    compare(got, ort_unpadded(onnx_path, ids), f"opset {opset} vs ORT", tol=HIDDEN_TOL)


def test_help_names_the_supported_opsets(spinel):
    out = spinel.cli("convert", "--help").stdout
    assert "opsets 11 to 18" in out and "float16" in out, out
    assert "ONNX Runtime-optimized" in out and "quantize" in out, out


# ---- float16 ---------------------------------------------------------------------------

def widened_to_f32(src, dst):
    """The fp16 file with every FLOAT16 value made FLOAT (exact), for ONNX Runtime.

    One constant is put back: spinel recognises GELU and computes it exactly,
    while the file divides by sqrt(2) rounded to float16 (1.4140625, which moves
    GELU by up to 3e-5 and the last hidden state by ~5e-4); so the reference
    divides by sqrt(2) in float32 too."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    restored = 0
    for n in g.node:
        if n.op_type == "Div" and "intermediate_act_fn" in n.name and n.input[1] in consts:
            t = consts[n.input[1]].attribute[0].t
            v = numpy_helper.to_array(t)
            assert v.dtype == np.float16 and float(v) == 1.4140625, (n.name, v)
            t.CopyFrom(numpy_helper.from_array(np.array(np.sqrt(2.0), dtype=np.float32), t.name))
            restored += 1
    assert restored == 6, f"{restored} GELU divisions found, expected one per layer"

    def widen(t):
        if t.data_type == TensorProto.FLOAT16:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))

    for t in g.initializer:
        widen(t)
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT16:
                a.i = TensorProto.FLOAT
            if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                widen(a.t)
    for v in list(g.input) + list(g.output) + list(g.value_info):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16:
            v.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.save(m, str(dst))
    return dst


def ort_f16(onnx_path, id_lists):
    out = ort_unpadded_any(onnx_path, id_lists)
    return [o.astype(np.float32) for o in out]


def ort_unpadded_any(onnx_path, id_lists):
    """ort_unpadded for a file whose output may be float16."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
    res = []
    for x in id_lists:
        a = np.asarray([x], dtype=np.int64)
        h = sess.run(None, {"input_ids": a, "attention_mask": np.ones_like(a),
                            "token_type_ids": np.zeros_like(a)})[0]
        res.append(h[0])
    return res


def convert_fp16(spinel, onnx_path, spnl, *extra):
    """Converts a float16 file (GELU's float16 constants move it by up to 3.1e-5,
    inside the matcher's tolerance)."""
    p = spinel.cli("convert", onnx_path, "-o", spnl, *extra, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not p.stderr.count("error"), p.stderr
    return p


@pytest.mark.parametrize("form", ["fp16", "fp16-io"])
def test_fp16_file_is_fp16(form, variant):
    import onnx
    from onnx import TensorProto

    m = onnx.load(str(variant(form)))
    types = {t.data_type for t in m.graph.initializer if len(t.dims) == 2}
    assert types == {TensorProto.FLOAT16}, types
    out_type = m.graph.output[0].type.tensor_type.elem_type
    assert out_type == (TensorProto.FLOAT if form == "fp16" else TensorProto.FLOAT16)
    assert any(n.op_type == "Cast" for n in m.graph.node)


@pytest.mark.parametrize("form", ["fp16", "fp16-io"])
def test_fp16_matches_ort(form, spinel, variant, ids, tmp_path):
    onnx_path = variant(form)
    spnl = tmp_path / "m.spnl"
    convert_fp16(spinel, onnx_path, spnl)
    got = run_spinel(spinel, spnl, ids)

    # The same weights in f32 arithmetic: the FP32 bar.
    wide = widened_to_f32(onnx_path, tmp_path / "widened.onnx")
    compare(got, ort_unpadded(wide, ids), f"{form} vs ORT on the widened file", tol=HIDDEN_TOL)

    # ONNX Runtime on the fp16 file itself, and the original f32 export.
    d, c = compare_loose(got, ort_f16(onnx_path, ids))
    print(f"{form} vs ORT fp16: max abs diff {d:.3e}, min cosine {c:.6f}")
    assert d <= FP16_TOL and c >= FP16_COS
    d, c = compare_loose(got, ort_unpadded(variant("opset", "--opset", 17), ids))
    print(f"{form} vs ORT on the f32 export: max abs diff {d:.3e}, min cosine {c:.6f}")
    assert d <= FP16_TOL and c >= FP16_COS


def compare_loose(got, ref):
    assert len(got) == len(ref)
    d, c = 0.0, 1.0
    for g, r in zip(got, ref):
        assert g.shape == r.shape and np.all(np.isfinite(g))
        d = max(d, float(np.max(np.abs(g.astype(np.float64) - r))))
        c = min(c, cosine(g.mean(axis=0), r.mean(axis=0)))
    return d, c


def test_fp16_int8(spinel, variant, ids, tmp_path):
    spnl = tmp_path / "q.spnl"
    convert_fp16(spinel, variant("fp16"), spnl, "--quant", "int8")
    got = run_spinel(spinel, spnl, ids)
    ref = ort_unpadded(variant("opset", "--opset", 17), ids)
    _, c = compare_loose(got, ref)
    print(f"fp16 --quant int8 vs ORT f32: min mean-pooled cosine {c:.6f}")
    assert c >= 0.99


# ---- refused files: short messages naming the fix ---------------------------------------

def refused(spinel, onnx_path, tmp_path, *extra):
    out = tmp_path / "out" / "m.spnl"
    out.parent.mkdir(exist_ok=True)
    p = spinel.cli("convert", onnx_path, "-o", out, *extra, check=False)
    assert p.returncode == 1, (p.returncode, p.stderr[-3000:])
    assert not out.exists() and os.listdir(out.parent) == []
    print(p.stderr)
    assert len(p.stderr.encode()) < MAX_MESSAGE, f"{len(p.stderr.encode())} bytes:\n{p.stderr}"
    return p.stderr


def test_ort_optimized_file(spinel, variant, tmp_path):
    err = refused(spinel, variant("ort-opt"), tmp_path)
    assert "ONNX Runtime-optimized" in err and "convert the unoptimized export" in err
    assert "com.microsoft.Attention x6" in err and "com.microsoft.SkipLayerNormalization x12" in err
    assert "and 36 more" in err  # 46 unsupported nodes, 10 named


def test_quantize_dynamic_file(spinel, variant, tmp_path):
    err = refused(spinel, variant("qdyn"), tmp_path)
    assert "already quantized" in err and "convert the f32 export with --quant int8" in err
    assert "MatMulInteger x36" in err and "DynamicQuantizeLinear x24" in err


def test_roberta_with_config_json(spinel, variant, minilm_model_dir, tmp_path):
    # A WordPiece vocabulary given by hand gets past the tokenizer: the graph is refused.
    err = refused(spinel, variant("roberta"), tmp_path,
                  "--tokenizer", os.path.join(minilm_model_dir, "vocab.txt"))
    assert "RoBERTa is not supported yet (supported: BERT" in err
    assert "[2/3] reading" in err


def test_unsupported_tokenizer_is_reported_before_the_graph(spinel, variant, tmp_path):
    """A RoBERTa export whose tokenizer.json is replaced by a Unigram one (a model type spinel
    does not read): the tokenizer is refused before any graph work. With its own byte-level BPE
    tokenizer it gets past the tokenizer and is refused as an unsupported family."""
    src = variant("roberta")
    d = tmp_path / "unigram"
    shutil.copytree(src.parent, d)
    (d / "tokenizer.json").write_text(json.dumps(
        {"version": "1.0", "model": {"type": "Unigram", "unk_id": 0, "vocab": [["a", 0.0]]}}))
    err = refused(spinel, d / src.name, tmp_path, "--tokenizer", d / "tokenizer.json")
    assert "tokenizer.json" in err and "Unigram" in err, err
    assert "[2/3]" not in err, "the graph was read before the tokenizer was checked"
    err = refused(spinel, src, tmp_path)
    assert "RoBERTa is not supported yet" in err


def test_many_unsupported_nodes_are_counted(spinel, variant, tmp_path):
    """A graph of 300 unknown nodes: 20 names, a count, and the op types."""
    import onnx
    from onnx import TensorProto, helper

    nodes, prev = [], "x"
    for i in range(300):
        op = ["Cos", "Sin", "Abs"][i % 3]
        nodes.append(helper.make_node(op, [prev], [f"v{i}"], name=f"strange_node_{i}"))
        prev = f"v{i}"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1])])
    d = tmp_path / "many"
    d.mkdir()
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(d / "model.onnx"))
    shutil.copyfile(variant("opset", "--opset", 17).parent / "vocab.txt", d / "vocab.txt")
    err = refused(spinel, d / "model.onnx", tmp_path)
    assert "unsupported nodes (300)" in err and "and 280 more" in err
    assert "strange_node_19 (Op: Sin)" in err and "strange_node_20 " not in err
    assert "Cos x100, Sin x100, Abs x100" in err or "Abs x100, Cos x100, Sin x100" in err

"""The ONNX files users bring, each against ONNX Runtime on the same file.

* BertModel exported with its default outputs (tools/export_onnx.py --pooler:
  last_hidden_state and pooler_output), opset 14 and 17: last_hidden_state is
  unchanged (max abs diff <= 1e-4 with --pool none) and `--pool pooler` returns
  pooler_output (max abs diff <= 1e-4); inspect lists the output.
* Two-input BERT (no token_type_ids input), opset 14 and 17: last_hidden_state
  <= 1e-4; the token-type table is one row.
* sentence-transformers graphs as Optimum exports them (inputs input_ids and
  attention_mask; outputs token_embeddings and sentence_embedding = mean over
  the mask, L2-normalized or not), from the real all-MiniLM-L6-v2: without
  --pool, spinel returns sentence_embedding (<= 1e-4); token_embeddings with
  --pool none; inspect shows default_pool "mean" and normalize.
* DistilBERT (tools/export_distilbert.py: a random DistilBertModel, 80% 4x1
  block-pruned), opset 14 and 17: FP32 last_hidden_state <= 1e-4; INT8
  (--sparse auto: every Linear s8-sparse; --sparse off) per-token cosine of the
  centered hidden states vs ONNX Runtime >= 0.99 mean, >= 0.95 min.

Every conversion must succeed first (the converter recognised the form and the
IR passed validate_graph): test_convert runs that part on its own.
"""

import json

import numpy as np
import pytest

TOL = 1e-4
THREADS = ["--threads", "2"]
# Short, typical and long inputs of conftest.SENTENCES.
SUBSET = [0, 1, 3, 5, 9, 12, 15, 20, 27, 40, 50, 53]

POOLER = ["minilm14_pooler", "minilm17_pooler"]
TWO = ["minilm14_two", "minilm17_two"]
ST = ["minilm14_st", "minilm17_st", "minilm17_st_nonorm"]
DISTILBERT = ["distilbert14", "distilbert17"]


# ---- helpers -----------------------------------------------------------------------

def ort_outputs(onnx_path, id_lists):
    """ONNX Runtime, one unpadded sequence per run: list of {output name: array without batch axis}."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]
    names = [o.name for o in sess.get_outputs()]
    out = []
    for ids in id_lists:
        x = np.asarray([ids], dtype=np.int64)
        feed = {"input_ids": x, "attention_mask": np.ones_like(x), "token_type_ids": np.zeros_like(x)}
        res = sess.run(names, {n: feed[n] for n in inputs})
        out.append({n: r[0].astype(np.float64) for n, r in zip(names, res)})
    return out


def run(spinel, spnl, id_lists, *pool_args):
    """`spinel run` with --ids; returns the rows (dicts) in input order."""
    args = []
    for ids in id_lists:
        args += ["--ids", ",".join(map(str, ids))]
    rows = spinel.run_json(spnl, *args, *pool_args, *THREADS)
    assert len(rows) == len(id_lists)
    return rows


def hidden(rows):
    return [np.asarray(r["last_hidden_state"], dtype=np.float64) for r in rows]


def embeddings(rows):
    return [np.asarray(r["embedding"], dtype=np.float64) for r in rows]


def max_abs(got, ref, what):
    worst = 0.0
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == r.shape, f"{what}: input {i}: shape {g.shape} != ONNX Runtime {r.shape}"
        assert np.all(np.isfinite(g)), f"{what}: input {i}: non-finite values"
        worst = max(worst, float(np.max(np.abs(g - r))))
    print(f"{what}: max abs diff vs ONNX Runtime {worst:.3e}")
    return worst


def cosines(a, b):
    return np.asarray([float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-30)) for x, y in zip(a, b)])


def inspect(spinel, spnl):
    return json.loads(spinel.cli("inspect", spnl, "--json").stdout)


# ---- fixtures ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ids(hf_ids):
    return [hf_ids[i] for i in SUBSET]


@pytest.fixture(scope="module")
def ort_ref(export, ids):
    done = {}

    def _ref(name):
        if name not in done:
            done[name] = ort_outputs(export(name), ids)
        return done[name]

    return _ref


@pytest.fixture(scope="module")
def convert_q(export, spinel, tmp_path_factory):
    """convert_q(name, *flags) -> fresh .spnl of that export converted with the flags."""
    out_dir = tmp_path_factory.mktemp("exports_spnl")
    done = {}

    def _convert(name, *flags):
        key = (name, flags)
        if key not in done:
            spnl = out_dir / f"{name}{''.join(f.strip('-') for f in flags)}.spnl"
            spinel.convert(export(name), spnl, *flags)
            assert spnl.exists() and spnl.stat().st_size > 0
            done[key] = spnl
        return done[key]

    return _convert


# ---- the converter side --------------------------------------------------------------

@pytest.mark.parametrize("name", POOLER + TWO + ST + DISTILBERT)
def test_convert(convert_q, name):
    """The form is recognised and its IR passes validate_graph (convert fails otherwise)."""
    convert_q(name)


@pytest.mark.parametrize("name", DISTILBERT)
def test_convert_int8(convert_q, name):
    convert_q(name, "--quant", "int8", "--sparse", "auto")


# ---- BertModel with the pooler --------------------------------------------------------

@pytest.mark.parametrize("name", POOLER)
def test_pooler(spinel, convert_q, ort_ref, ids, name):
    spnl = convert_q(name)
    ref = ort_ref(name)
    d = max_abs(hidden(run(spinel, spnl, ids, "--pool", "none")), [r["last_hidden_state"] for r in ref],
                f"{name} last_hidden_state")
    assert d <= TOL
    pooled = embeddings(run(spinel, spnl, ids, "--pool", "pooler"))
    d = max_abs(pooled, [r["pooler_output"] for r in ref], f"{name} --pool pooler")
    assert d <= TOL
    # The output's own name works as well (same batch: the same numbers).
    named = embeddings(run(spinel, spnl, ids, "--pool", "pooler_output"))
    assert all(np.array_equal(a, b) for a, b in zip(named, pooled))
    info = inspect(spinel, spnl)
    assert info["config"]["default_pool"] == "mean", info["config"]
    kinds = [op["kind"] for op in info["ops"]]
    assert kinds[-2:] == ["Pool", "Linear"], kinds


# ---- two inputs ----------------------------------------------------------------------

@pytest.mark.parametrize("name", TWO)
def test_two_inputs(spinel, convert_q, ort_ref, ids, name):
    spnl = convert_q(name)
    d = max_abs(hidden(run(spinel, spnl, ids, "--pool", "none")), [r["last_hidden_state"] for r in ort_ref(name)],
                f"{name} last_hidden_state")
    assert d <= TOL
    assert inspect(spinel, spnl)["config"]["type_vocab_size"] == 1


# ---- sentence-transformers / Optimum ---------------------------------------------------

@pytest.mark.parametrize("name", ST)
def test_sentence_transformers(spinel, convert_q, ort_ref, ids, name):
    spnl = convert_q(name)
    ref = ort_ref(name)
    normalize = not name.endswith("nonorm")
    cfg = inspect(spinel, spnl)["config"]
    assert cfg["default_pool"] == "mean" and cfg["normalize"] == normalize, cfg
    # Without --pool: the model's default, i.e. sentence_embedding.
    d = max_abs(embeddings(run(spinel, spnl, ids)), [r["sentence_embedding"] for r in ref],
                f"{name} default pooling")
    assert d <= TOL
    d = max_abs(hidden(run(spinel, spnl, ids, "--pool", "none")), [r["token_embeddings"] for r in ref],
                f"{name} token_embeddings")
    assert d <= TOL


def test_sentence_transformers_text(spinel, convert_q, ort_ref, ids, sentences, hf_ids):
    """Text through spinel's own tokenizer gives the same default embedding."""
    spnl = convert_q("minilm17_st")
    ref = ort_ref("minilm17_st")
    texts = [sentences[i] for i in SUBSET[:6]]
    assert [hf_ids[i] for i in SUBSET[:6]] == ids[:6]
    args = []
    for t in texts:
        args += ["--text", t]
    rows = spinel.run_json(spnl, *args, *THREADS)
    d = max_abs(embeddings(rows), [r["sentence_embedding"] for r in ref[:6]], "minilm17_st --text")
    assert d <= TOL


# ---- DistilBERT ----------------------------------------------------------------------

@pytest.mark.parametrize("name", DISTILBERT)
def test_distilbert_fp32(spinel, convert_q, ort_ref, ids, name):
    spnl = convert_q(name)
    info = inspect(spinel, spnl)
    assert info["config"]["architecture"] == "distilbert", info["config"]
    assert info["config"]["type_vocab_size"] == 0
    d = max_abs(hidden(run(spinel, spnl, ids, "--pool", "none")), [r["last_hidden_state"] for r in ort_ref(name)],
                f"{name} FP32 last_hidden_state")
    assert d <= TOL


@pytest.mark.parametrize("name", DISTILBERT)
@pytest.mark.parametrize("sparse", ["auto", "off"])
def test_distilbert_int8(spinel, convert_q, ort_ref, ids, name, sparse):
    spnl = convert_q(name, "--quant", "int8", "--sparse", sparse)
    linears = [op for op in inspect(spinel, spnl)["ops"] if op["kind"] == "Linear"]
    want = "s8-sparse" if sparse == "auto" else "s8-dense"
    assert linears and all(op["precision"] == want for op in linears), [op["precision"] for op in linears]
    if sparse == "auto":
        assert all(op["block_sparsity"] >= 0.79 for op in linears), [op["block_sparsity"] for op in linears]
    # Per token, centered by the reference's mean over every token: the final
    # LayerNorm's beta dominates a random model's outputs (and mean pooling
    # would average the rest away), so raw cosines are ~1 whatever INT8 does.
    ref = [r["last_hidden_state"] for r in ort_ref(name)]
    center = np.concatenate(ref).mean(axis=0)
    got = np.concatenate(hidden(run(spinel, spnl, ids, "--pool", "none"))) - center
    cos = cosines(got, np.concatenate(ref) - center)
    print(f"{name} INT8 --sparse {sparse}: centered per-token cosine vs ONNX Runtime "
          f"mean {cos.mean():.5f} min {cos.min():.5f}")
    assert cos.mean() >= 0.99, f"mean cosine {cos.mean():.5f} < 0.99"
    assert cos.min() >= 0.95, f"min cosine {cos.min():.5f} < 0.95"

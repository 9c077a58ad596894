"""spinel vs ONNX Runtime and PyTorch on the real all-MiniLM-L6-v2.

For the opset 14 and 17 exports, every test sentence goes through spinel as one
mixed-length batch and one by one, through the CLI (`spinel run --pool none
--ids ...`) and the C API (libspinel.so via ctypes), and is compared with ONNX
Runtime on the same ONNX file:

  * last_hidden_state: max abs diff <= 1e-4 over every real token;
  * mean-pooled embedding: cosine >= 0.99999.

The mean-pooled, L2-normalized embeddings of `spinel run --pool mean
--normalize` are compared with the PyTorch BertModel (mean over the attention
mask, L2 normalize): cosine >= 0.99999. The tanh-GELU, -10000-mask and
external-data exports are converted and checked against ONNX Runtime on a few
sentences, and text input through spinel's own tokenizer must give the same
embeddings as the HF ids.
"""

import json

import numpy as np
import pytest

HIDDEN_TOL = 1e-4
COS_TOL = 0.99999
MAIN = ["minilm14", "minilm17"]
THREADS = ["--threads", "2"]


# ---- references -------------------------------------------------------------------

def _ort_session(onnx_path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])


def ort_unpadded(onnx_path, id_lists, type_lists=None):
    """ONNX Runtime, one sequence per run, no padding."""
    sess = _ort_session(onnx_path)
    out = []
    for i, ids in enumerate(id_lists):
        x = np.asarray([ids], dtype=np.int64)
        tt = np.zeros_like(x) if type_lists is None else np.asarray([type_lists[i]], dtype=np.int64)
        h = sess.run(["last_hidden_state"], {"input_ids": x, "attention_mask": np.ones_like(x),
                                             "token_type_ids": tt})[0]
        assert h.shape[:2] == (1, len(ids))
        out.append(h[0])
    return out


def ort_padded(onnx_path, id_lists):
    """ONNX Runtime, one padded batch with the attention mask; real tokens only."""
    sess = _ort_session(onnx_path)
    n, s = len(id_lists), max(len(x) for x in id_lists)
    x = np.zeros((n, s), dtype=np.int64)
    m = np.zeros((n, s), dtype=np.int64)
    for i, ids in enumerate(id_lists):
        x[i, : len(ids)] = ids
        m[i, : len(ids)] = 1
    h = sess.run(["last_hidden_state"], {"input_ids": x, "attention_mask": m,
                                         "token_type_ids": np.zeros_like(x)})[0]
    return [h[i, : len(ids)] for i, ids in enumerate(id_lists)]


def cosine(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def compare(got, ref, what, tol=HIDDEN_TOL):
    """got/ref: lists of [len_i, hidden] arrays. Returns (max abs diff, min cosine)."""
    assert len(got) == len(ref), f"{what}: {len(got)} outputs for {len(ref)} inputs"
    worst, worst_i, min_cos, min_i = 0.0, -1, 1.0, -1
    for i, (g, r) in enumerate(zip(got, ref)):
        assert g.shape == r.shape, f"{what}: input {i}: shape {g.shape} != reference {r.shape}"
        assert np.all(np.isfinite(g)), f"{what}: input {i}: non-finite values"
        d = float(np.max(np.abs(g.astype(np.float64) - r)))
        if d > worst:
            worst, worst_i = d, i
        c = cosine(g.mean(axis=0), r.mean(axis=0))
        if c < min_cos:
            min_cos, min_i = c, i
    print(f"{what}: max abs diff {worst:.3e} (input {worst_i}), min mean-pool cosine "
          f"{min_cos:.9f} (input {min_i})")
    assert worst <= tol, f"{what}: max abs diff {worst:.3e} > {tol} at input {worst_i}"
    assert min_cos >= COS_TOL, f"{what}: mean-pooled cosine {min_cos:.9f} < {COS_TOL} at input {min_i}"
    return worst, min_cos


@pytest.fixture(scope="module")
def ort_ref(converted, hf_ids):
    cache = {}

    def get(name):
        if name not in cache:
            onnx_path, _ = converted(name)
            cache[name] = ort_unpadded(onnx_path, hf_ids)
        return cache[name]

    return get


# ---- the main exports: every sentence --------------------------------------------

@pytest.mark.parametrize("name", MAIN)
def test_cli_mixed_batch_vs_ort(name, spinel, converted, hf_ids, ort_ref):
    onnx_path, spnl = converted(name)
    got = spinel.run_ids(spnl, hf_ids, "none", ["--batch-size", "64", *THREADS])
    compare(got, ort_ref(name), f"{name} CLI one batch vs ORT unpadded")
    compare(got, ort_padded(onnx_path, hf_ids), f"{name} CLI one batch vs ORT padded batch")


@pytest.mark.parametrize("name", MAIN)
def test_cli_one_by_one_vs_ort(name, spinel, converted, hf_ids, ort_ref):
    _, spnl = converted(name)
    got = spinel.run_ids(spnl, hf_ids, "none", ["--batch-size", "1", *THREADS])
    compare(got, ort_ref(name), f"{name} CLI batch-size 1 vs ORT")


@pytest.mark.parametrize("name", MAIN)
def test_capi_batch_and_single_vs_ort(name, capi, converted, hf_ids, ort_ref):
    _, spnl = converted(name)
    ref = ort_ref(name)
    with capi.load(spnl, threads=2) as m:
        assert m.hidden == 384 and m.vocab == 30522 and m.max_tokens == 512
        batch = m.run(hf_ids)
        compare(batch, ref, f"{name} C API one batch vs ORT")
        single = [m.run([ids])[0] for ids in hf_ids]
        compare(single, ref, f"{name} C API one by one vs ORT")
        # The same sequences in a different batch mix (reversed, and in two halves).
        rev = m.run(hf_ids[::-1])[::-1]
        compare(rev, ref, f"{name} C API reversed batch vs ORT")
        half = len(hf_ids) // 2
        halves = m.run(hf_ids[:half]) + m.run(hf_ids[half:])
        compare(halves, ref, f"{name} C API two half batches vs ORT")


@pytest.mark.parametrize("name", MAIN)
def test_capi_sentence_pairs_vs_ort(name, capi, converted, hf_tokenizer, sentences):
    """Token type ids matter: sentence pairs with segment B = 1."""
    onnx_path, spnl = converted(name)
    pairs = [(sentences[i], sentences[i + 1]) for i in range(4, 40, 4)]
    enc = [hf_tokenizer(a, b) for a, b in pairs]
    ids = [e["input_ids"] for e in enc]
    types = [e["token_type_ids"] for e in enc]
    assert all(any(t) for t in types)
    ref = ort_unpadded(onnx_path, ids, types)
    with capi.load(spnl, threads=2) as m:
        compare(m.run(ids, types), ref, f"{name} C API sentence pairs vs ORT")
        # Without the type ids the result must differ (they are not ignored).
        no_types = m.run(ids)
    assert max(float(np.max(np.abs(a - r))) for a, r in zip(no_types, ref)) > 1e-3


# ---- against PyTorch ----------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_embeddings(hf_ids, minilm_model_dir):
    import torch
    from transformers import BertModel

    torch.set_num_threads(2)
    model = BertModel.from_pretrained(minilm_model_dir, add_pooling_layer=False,
                                      attn_implementation="eager", local_files_only=True).eval()
    out = []
    with torch.no_grad():
        # One sentence per run (Debian's torch uses a generic BLAS: padding would cost
        # minutes); the mean still goes over the attention mask, as sentence-transformers does.
        for ids in hf_ids:
            x = torch.tensor([ids], dtype=torch.long)
            mask = torch.ones_like(x)
            h = model(input_ids=x, attention_mask=mask, token_type_ids=torch.zeros_like(x)).last_hidden_state
            m = mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out.append(pooled[0].numpy().astype(np.float64))
    return out


@pytest.mark.parametrize("name", MAIN)
def test_mean_pooled_normalized_vs_pytorch(name, spinel, converted, hf_ids, torch_embeddings):
    _, spnl = converted(name)
    got = spinel.run_ids(spnl, hf_ids, "mean", ["--normalize", "--batch-size", "64", *THREADS])
    assert len(got) == len(torch_embeddings)
    coss = []
    for i, (g, r) in enumerate(zip(got, torch_embeddings)):
        assert g.shape == (384,), f"input {i}: embedding shape {g.shape}"
        assert abs(float(np.linalg.norm(g)) - 1.0) < 1e-5, f"input {i}: norm {np.linalg.norm(g)}"
        coss.append(cosine(g, r))
    worst = int(np.argmin(coss))
    print(f"{name} CLI mean+normalize vs PyTorch: min cosine {coss[worst]:.9f} (input {worst}), "
          f"max abs diff {max(float(np.max(np.abs(g - r))) for g, r in zip(got, torch_embeddings)):.3e}")
    assert coss[worst] >= COS_TOL, f"input {worst}: cosine {coss[worst]:.9f} vs PyTorch"
    # Different sentences must not collapse onto one vector.
    assert cosine(got[4], got[7]) < 0.9


def test_cls_pool_is_first_row(spinel, converted, hf_ids, ort_ref):
    _, spnl = converted("minilm17")
    few = hf_ids[:12]
    got = spinel.run_ids(spnl, few, "cls", THREADS)
    ref = ort_ref("minilm17")
    d = max(float(np.max(np.abs(g - r[0]))) for g, r in zip(got, ref[:12]))
    assert d <= HIDDEN_TOL, f"--pool cls vs ORT row 0: {d:.3e}"


# ---- variants: a few sentences each -------------------------------------------------------

VARIANTS = {
    "minilm14_tanh": "tanh",
    "minilm17_m10000": "-10000",
    "minilm14_m10000": "-10000",
    "minilm17_ext": None,
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_exports_vs_ort(name, spinel, capi, converted, hf_ids):
    onnx_path, spnl = converted(name)
    log = converted.logs[name]
    marker = VARIANTS[name]
    if marker is not None:
        assert marker in log, f"convert did not report the {marker} form:\n{log}"
    if name.endswith("_ext"):
        data = onnx_path.parent / (onnx_path.name + ".data")
        assert data.exists() and data.stat().st_size > 80_000_000, "weights are not external"
        assert onnx_path.stat().st_size < 5_000_000, "the .onnx still holds the weights"
    idx = [0, 1, 5, 13, 20, 50, 51, len(hf_ids) - 3]  # includes 2-token and long inputs
    few = [hf_ids[i] for i in idx]
    ref = ort_unpadded(onnx_path, few)
    with capi.load(spnl, threads=2) as m:
        compare(m.run(few), ref, f"{name} C API batch vs ORT")
    got = spinel.run_ids(spnl, few[:4], "none", THREADS)
    compare(got, ref[:4], f"{name} CLI vs ORT")


def test_tanh_export_differs_from_erf(capi, converted, hf_ids):
    """The tanh variant is really computed with tanh GELU (results differ slightly)."""
    few = hf_ids[50:52]
    with capi.load(converted("minilm14")[1]) as a, capi.load(converted("minilm14_tanh")[1]) as b:
        ha, hb = a.run(few), b.run(few)
    d = max(float(np.max(np.abs(x - y))) for x, y in zip(ha, hb))
    assert d > 1e-5, f"erf and tanh exports give identical outputs ({d:.2e})"


# ---- text input through spinel's tokenizer == ids path ----------------------------------

def test_text_input_matches_ids(spinel, converted, sentences, hf_ids, tmp_path):
    _, spnl = converted("minilm17")
    assert all("\n" not in s and "\r" not in s for s in sentences)
    lines = tmp_path / "sentences.txt"
    lines.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    opts = ["--pool", "mean", "--batch-size", "64", *THREADS]
    by_text = spinel.run_json(spnl, "--input", lines, *opts)
    by_ids = spinel.run_json(spnl, *sum((["--ids", ",".join(map(str, x))] for x in hf_ids), []), *opts)
    assert len(by_text) == len(sentences) == len(by_ids)
    bad_tokens = [(i, r["tokens"], len(hf_ids[i])) for i, r in enumerate(by_text)
                  if r["tokens"] != len(hf_ids[i])]
    assert not bad_tokens, f"token counts differ from HF (index, spinel, HF): {bad_tokens}"
    for i, (t, d) in enumerate(zip(by_text, by_ids)):
        assert t["text"] == sentences[i]
        assert "text" not in d
        diff = float(np.max(np.abs(np.asarray(t["embedding"]) - np.asarray(d["embedding"]))))
        assert diff <= 1e-6, f"input {i} ({sentences[i][:40]!r}): text vs ids embeddings differ by {diff:.2e}"

    # --text (repeated) gives the same as --input, and --text "" is a valid input.
    picks = [0, 3, 15, 17, 52]
    args = sum((["--text", sentences[i]] for i in picks), [])
    by_flag = spinel.run_json(spnl, *args, *opts)
    for k, i in enumerate(picks):
        assert by_flag[k]["text"] == sentences[i]
        assert by_flag[k]["tokens"] == len(hf_ids[i])
        diff = float(np.max(np.abs(np.asarray(by_flag[k]["embedding"]) -
                                   np.asarray(by_ids[i]["embedding"]))))
        assert diff <= 1e-4, f"--text input {i}: differs from the ids path by {diff:.2e}"


def test_capi_tokenize_matches_hf(capi, converted, sentences, hf_ids):
    _, spnl = converted("minilm17")
    with capi.load(spnl) as m:
        bad = [i for i, s in enumerate(sentences) if m.tokenize(s) != hf_ids[i]]
        assert not bad, f"spinel_tokenize differs from HF on inputs {bad}"
        assert m.tokenize(sentences[-3], max_length=16) == hf_ids[-3][:15] + [102]


def test_profile_reports_every_op_and_changes_no_output(spinel, converted, sentences):
    """`run --profile --repeat N` prints the per-op-class table on stderr,
    counts N runs (the warm-up excluded) and leaves stdout as without it."""
    _, spnl = converted("minilm17")
    args = ["--text", sentences[0], "--text", sentences[1], "--pool", "mean", *THREADS]
    plain = spinel.run_json(spnl, *args)
    p = spinel.cli("run", spnl, *args, "--profile", "--repeat", "3")
    profiled = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["embedding"] for r in profiled] == [r["embedding"] for r in plain]
    err = p.stderr
    assert "profile:" in err and "over 3 runs" in err, err
    rows = [l.split() for l in err.splitlines() if l.split() and l.split()[0] in
            ("Linear", "Attention", "LayerNorm", "Embedding", "Activation", "Pool")]
    kinds = {r[0] for r in rows}
    assert {"Linear", "Attention", "LayerNorm", "Embedding"} <= kinds, err
    # Columns: op, kernel, shape (Linear: "K->N", else "-"), ops, ms per run, %.
    for r in rows:
        assert (r[2] != "-") == (r[0] == "Linear"), err
        if r[0] == "Linear":
            k, n = r[2].split("->")
            assert int(k) in (384, 1536) and int(n) in (384, 1152, 1536), err
    # MiniLM: 6 layers x (3 projections fused or not + out + 2 FFN) Linears; each
    # op counted once, shares summing to ~100%.
    n_ops = sum(int(r[3]) for r in rows)
    info = json.loads(spinel.cli("inspect", spnl, "--json").stdout)
    assert n_ops == len(info["ops"]), err
    assert abs(sum(float(r[5].rstrip("%")) for r in rows) - 100.0) < 0.5, err

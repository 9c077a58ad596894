"""The DNABERT-2 Python tools (tools/dnabert2/): architecture, ONNX export, ALiBi, tokenizer,
generated DNA. PyTorch and ONNX Runtime only -- no spinel binary -- and quick (tiny models).

The expectations are written here independently of tools/dnabert2/model.py: the ALiBi slopes
in closed form, and a numpy forward of the architecture read straight from the state dict.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort
import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools" / "dnabert2"
sys.path.insert(0, str(TOOLS))
import model as dm  # noqa: E402

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("dnabert2_export_onnx", TOOLS / "export_onnx.py")
dexport = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dexport)
import gen_dna  # noqa: E402
import make_random_checkpoint as mrc  # noqa: E402


def reference_slopes(n):
    """ALiBi slopes in closed form: for a power of two n, 2^(-8 i / n), i = 1..n; otherwise those of
    c = 2^floor(log2 n), then 2^(-8 (2j + 1) / (2c)) for j = 0..n-c-1 (every other slope of 2c)."""
    c = 2 ** int(math.floor(math.log2(n)))
    out = [2.0 ** (-8.0 * i / c) for i in range(1, c + 1)]
    out += [2.0 ** (-8.0 * (2 * j + 1) / (2 * c)) for j in range(n - c)]
    return out


@pytest.mark.parametrize("n", range(1, 17))
def test_alibi_slopes_formula(n):
    np.testing.assert_allclose(dm.alibi_slopes(n), reference_slopes(n), rtol=1e-12)


def test_alibi_slopes_12_heads_as_documented():
    want = [2 ** -k for k in range(1, 9)] + [0.7071, 0.3536, 0.1768, 0.0884]
    np.testing.assert_allclose(dm.alibi_slopes(12), want, atol=5e-5)


def find_alibi_output(graph):
    """The tensor -slope_h * |j - i|: follow the consumers of the Range node to the Mul that
    multiplies by a constant of H elements (the way a converter recognises the subgraph)."""
    consumers = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    ranges = [n for n in graph.node if n.op_type == "Range"]
    assert len(ranges) == 1, f"expected one Range node (ALiBi shared by all layers), found {len(ranges)}"
    frontier, seen = list(ranges[0].output), set()
    while frontier:
        t = frontier.pop(0)
        for node in consumers.get(t, []):
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "Mul" and any(i in consts and consts[i].size > 0 for i in node.input):
                c = next(consts[i] for i in node.input if i in consts)
                return node.output[0], c
            frontier.extend(node.output)
    raise AssertionError("no Mul by a constant downstream of Range")


def tiny_model(heads, layers=1, head_dim=4, classifier=0, seed=0, vocab=64):
    return mrc.make(layers=layers, hidden=heads * head_dim, heads=heads, intermediate=8, vocab=vocab,
                    classifier=classifier, seed=seed)


@pytest.mark.parametrize("opset", [14, 17])
def test_exported_alibi_bias_equals_formula(tmp_path, opset):
    """For 1..16 heads the exported graph's ALiBi tensor equals -slope_h * |j - i| at several lengths."""
    for heads in range(1, 17):
        m = tiny_model(heads)
        path = str(tmp_path / f"h{heads}.onnx")
        dexport.export(m, path, opset)
        proto = onnx.load(path)
        name, const = find_alibi_output(proto.graph)
        np.testing.assert_allclose(np.abs(const.reshape(-1)), reference_slopes(heads), rtol=1e-6)
        proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        for s in (1, 2, 9, 40):
            feed = dexport.sample_feed(64, [s], 0, False)
            bias = sess.run([name], feed)[0]
            i = np.arange(s)
            want = -np.asarray(reference_slopes(heads))[:, None, None] * np.abs(i[None, :] - i[:, None])[None]
            np.testing.assert_allclose(bias.reshape(heads, s, s), want, rtol=1e-6, atol=1e-6,
                                       err_msg=f"heads {heads} length {s} opset {opset}")


# ---- an independent numpy forward -------------------------------------------------------

def _ln(x, w, b, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def numpy_forward(sd, cfg, ids, mask, tt):
    """One sequence at a time, real tokens only (as DNABERT-2 unpads): returns
    (last_hidden_state padded with zeros, logits or None)."""
    p = {k: v.double().numpy() for k, v in sd.items()}
    H, nh, inter = cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size
    d = H // nh
    slopes = np.asarray(reference_slopes(nh))
    out = np.zeros(ids.shape + (H,))
    logits = []
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        x = p["bert.embeddings.word_embeddings.weight"][ids[b, :n]]
        x = x + p["bert.embeddings.token_type_embeddings.weight"][tt[b, :n]]
        x = _ln(x, p["bert.embeddings.LayerNorm.weight"], p["bert.embeddings.LayerNorm.bias"])
        pos = np.arange(n)
        alibi = -slopes[:, None, None] * np.abs(pos[None, :] - pos[:, None])[None]
        for i in range(cfg.num_hidden_layers):
            L = f"bert.encoder.layer.{i}."
            qkv = x @ p[L + "attention.self.Wqkv.weight"].T + p[L + "attention.self.Wqkv.bias"]
            q, k, v = (qkv[:, j * H:(j + 1) * H].reshape(n, nh, d).transpose(1, 0, 2) for j in range(3))
            sc = q @ k.transpose(0, 2, 1) / math.sqrt(d) + alibi
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            a = (sc / sc.sum(-1, keepdims=True)) @ v  # [nh, n, d]
            a = a.transpose(1, 0, 2).reshape(n, H)
            a = a @ p[L + "attention.output.dense.weight"].T + p[L + "attention.output.dense.bias"]
            x = _ln(a + x, p[L + "attention.output.LayerNorm.weight"], p[L + "attention.output.LayerNorm.bias"])
            g = x @ p[L + "mlp.gated_layers.weight"].T
            h = _gelu(g[:, :inter]) * g[:, inter:]
            h = h @ p[L + "mlp.wo.weight"].T + p[L + "mlp.wo.bias"]
            x = _ln(h + x, p[L + "mlp.layernorm.weight"], p[L + "mlp.layernorm.bias"])
        out[b, :n] = x
        if "classifier.weight" in p:
            pooled = np.tanh(x[0] @ p["bert.pooler.dense.weight"].T + p["bert.pooler.dense.bias"])
            logits.append(pooled @ p["classifier.weight"].T + p["classifier.bias"])
    return out, (np.stack(logits) if logits else None)


@pytest.mark.parametrize("opset,two_inputs,classifier", [(14, False, 3), (17, False, 3), (17, True, 0),
                                                         (14, True, 2)])
def test_export_matches_numpy_reference(tmp_path, opset, two_inputs, classifier):
    heads = 6  # not a power of two
    m = tiny_model(heads, layers=2, head_dim=8, classifier=classifier, seed=3)
    folder = tmp_path / "ckpt"
    dm.save_folder(m, str(folder), mlm_head=not classifier, safetensors=classifier == 2)
    loaded = dm.load_folder(str(folder))
    assert loaded.is_classifier == bool(classifier)
    path = str(tmp_path / "m.onnx")
    dexport.export(loaded, path, opset, two_inputs)
    worst = dexport.check(loaded, path, two_inputs, cases=[[1], [9, 4, 1], [30, 17]])
    assert max(worst.values()) < 1e-5, worst

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]
    assert inputs == ["input_ids", "attention_mask"] + ([] if two_inputs else ["token_type_ids"])
    assert outputs == ["last_hidden_state"] + (["logits"] if classifier else [])
    feed = dexport.sample_feed(64, [13, 1, 7, 20], 5, two_inputs)
    got = sess.run(None, feed)
    tt = feed.get("token_type_ids", np.zeros_like(feed["input_ids"]))
    ref_h, ref_logits = numpy_forward(m.state_dict(), m.config, feed["input_ids"], feed["attention_mask"], tt)
    np.testing.assert_allclose(got[0], ref_h, atol=2e-5)
    assert np.all(got[0][feed["attention_mask"] == 0] == 0.0), "padded positions must be exactly 0"
    if classifier:
        np.testing.assert_allclose(got[1], ref_logits, atol=2e-5)


def test_full_size_names_and_shapes():
    """The 117M architecture has the released checkpoint's names and shapes (issue 9)."""
    cfg = dm.Config()
    shapes = {k: tuple(v.shape) for k, v in dm.Wrapper(cfg).state_dict().items()}
    assert shapes["bert.embeddings.word_embeddings.weight"] == (4096, 768)
    assert shapes["bert.embeddings.token_type_embeddings.weight"] == (2, 768)
    assert not any("position_embeddings" in k for k in shapes)
    for i in (0, 11):
        L = f"bert.encoder.layer.{i}."
        assert shapes[L + "attention.self.Wqkv.weight"] == (2304, 768)
        assert shapes[L + "attention.self.Wqkv.bias"] == (2304,)
        assert shapes[L + "attention.output.dense.weight"] == (768, 768)
        assert shapes[L + "attention.output.LayerNorm.weight"] == (768,)
        assert shapes[L + "mlp.gated_layers.weight"] == (6144, 768)
        assert L + "mlp.gated_layers.bias" not in shapes
        assert shapes[L + "mlp.wo.weight"] == (768, 3072)
        assert shapes[L + "mlp.wo.bias"] == (768,)
        assert shapes[L + "mlp.layernorm.weight"] == (768,)
    assert "bert.encoder.layer.12.mlp.wo.weight" not in shapes
    assert sum(int(np.prod(s)) for s in shapes.values()) == pytest.approx(117e6, rel=0.01)


def test_loader_accepts_checkpoint_forms(tmp_path):
    """Bare BertModel names (no "bert." prefix), separate query/key/value, an MLM head and
    buffers are all read; a wrong shape is an error naming the tensor."""
    m = tiny_model(3, layers=2, head_dim=4, seed=7)
    sd = {k[len("bert."):]: v for k, v in m.state_dict().items()}
    H = m.config.hidden_size
    for i in range(2):
        base = f"encoder.layer.{i}.attention.self."
        for p in ("weight", "bias"):
            w = sd.pop(base + f"Wqkv.{p}")
            sd[base + f"query.{p}"], sd[base + f"key.{p}"], sd[base + f"value.{p}"] = w[:H], w[H:2 * H], w[2 * H:]
    sd["encoder.alibi"] = torch.zeros(1, 3, 8, 8)
    sd["cls.predictions.bias"] = torch.zeros(64)
    (tmp_path / "a").mkdir()
    torch.save(sd, tmp_path / "a" / "pytorch_model.bin")
    (tmp_path / "a" / "config.json").write_text(json.dumps(dict(m.config.to_dict(), architectures=["BertModel"])))
    loaded = dm.load_folder(str(tmp_path / "a"))
    for k, v in m.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k

    sd["encoder.layer.1.mlp.wo.weight"] = torch.zeros(H, 9)
    torch.save(sd, tmp_path / "a" / "pytorch_model.bin")
    with pytest.raises(Exception, match="wo.weight"):
        dm.load_folder(str(tmp_path / "a"))


def test_export_cli_on_random_folder(tmp_path):
    """The command a user runs on a checkpoint folder: exports, copies the tokenizer, checks ORT."""
    folder = tmp_path / "ckpt"
    dm.save_folder(mrc.make(layers=1, hidden=40, heads=5, intermediate=16, vocab=64, classifier=4), str(folder))
    (folder / "tokenizer.json").write_text("{}")
    out = tmp_path / "out" / "model.onnx"
    r = subprocess.run([sys.executable, str(TOOLS / "export_onnx.py"), str(folder), "-o", str(out), "--opset", "14"],
                       check=True, capture_output=True, text=True)
    assert "logits" in r.stdout and (tmp_path / "out" / "tokenizer.json").exists()


# ---- generated DNA and the tokenizer ----------------------------------------------------

def test_gen_dna_deterministic_and_species_distinct():
    a = gen_dna.corpus(20, 300, 400, n_species=4, seed=3)
    assert a == gen_dna.corpus(20, 300, 400, n_species=4, seed=3)
    assert a != gen_dna.corpus(20, 300, 400, n_species=4, seed=4)
    assert all(set(s) <= set("ACGT") and 300 <= len(s) <= 400 for s, _ in a)
    big = gen_dna.corpus(40, 2000, 2000, n_species=4, seed=3)
    gc = [np.mean([(s.count("G") + s.count("C")) / len(s) for s, sp in big if sp == k]) for k in range(4)]
    sp = gen_dna.make_species(4, seed=3)
    np.testing.assert_allclose(gc, [x.gc for x in sp], atol=0.08)


def test_tokenizer_structure(tmp_path):
    path = tmp_path / "tokenizer.json"
    subprocess.run([sys.executable, str(TOOLS / "train_tokenizer.py"), "--vocab", "300", "--count", "200",
                    "--max-len", "600", "-o", str(path)], check=True)
    d = json.loads(path.read_text())
    assert d["model"]["type"] == "BPE" and d["model"]["unk_token"] == "[UNK]"
    assert d["model"]["continuing_subword_prefix"] is None and d["model"]["end_of_word_suffix"] is None
    assert d["normalizer"] is None and d["pre_tokenizer"] == {"type": "Whitespace"}
    assert d["post_processor"]["type"] == "TemplateProcessing"
    assert [t["content"] for t in d["added_tokens"]] == ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    assert [t["id"] for t in d["added_tokens"]] == [0, 1, 2, 3, 4]
    assert len(d["model"]["vocab"]) == 300

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer.from_file(str(path))
    enc = tok.encode("ACGTTGCAAC")
    assert enc.ids[0] == 1 and enc.ids[-1] == 2 and len(enc.ids) > 2
    assert "".join(enc.tokens[1:-1]) == "ACGTTGCAAC"
    assert tok.encode("acgN").ids[1:-1] == [0, 0, 0, 0]  # not in the vocabulary: [UNK] each
    hf = PreTrainedTokenizerFast(tokenizer_file=str(path), unk_token="[UNK]", cls_token="[CLS]",
                                 sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]")
    b = hf(["ACGT", "ACGTACGTAC"], padding=True)
    assert b["input_ids"][0][-1] == 3 and b["attention_mask"][0][-1] == 0


# ---- the trained task (train_task.py --quick, ~2-3 minutes) -----------------------------

# dnabert2_task: the shared fixture in conftest.py (one training per pytest session).


def test_task_quick_predictions_reproduce_in_onnxruntime(dnabert2_task):
    from tokenizers import Tokenizer

    out = dnabert2_task
    summary = json.loads((out / "summary.json").read_text())
    held = json.loads((out / "heldout.json").read_text())
    assert len(held["sequences"]) == len(held["labels"]) == summary["heldout_sequences"]
    assert all(70 <= len(s) <= 500 for s in held["sequences"])
    assert summary["config"]["num_attention_heads"] & (summary["config"]["num_attention_heads"] - 1), \
        "the CI task's head count should not be a power of two"
    for name in ("dense", "pruned"):
        pred = json.loads((out / name / "predictions.json").read_text())
        assert pred["accuracy"] > 0.8, (name, pred["accuracy"])
        assert pred["accuracy"] == summary["results"][name]["accuracy"]
        tok = Tokenizer.from_file(str(out / name / "tokenizer.json"))
        sess = ort.InferenceSession(str(out / name / "model.onnx"), providers=["CPUExecutionProvider"])
        ids = [tok.encode(s).ids for s in held["sequences"]]
        logits = np.zeros((len(ids), summary["config"]["num_labels"]), dtype=np.float32)
        for start in range(0, len(ids), 50):
            chunk = ids[start:start + 50]
            s = max(len(i) for i in chunk)
            x = np.full((len(chunk), s), 3, dtype=np.int64)
            m = np.zeros_like(x)
            for r, i in enumerate(chunk):
                x[r, :len(i)], m[r, :len(i)] = i, 1
            logits[start:start + len(chunk)] = sess.run(["logits"], {"input_ids": x, "attention_mask": m,
                                                                     "token_type_ids": np.zeros_like(x)})[0]
        np.testing.assert_allclose(logits, np.asarray(pred["logits"]), atol=1e-4)
        assert logits.argmax(1).tolist() == pred["predictions"]
        acc = float(np.mean(logits.argmax(1) == np.asarray(held["labels"])))
        assert acc == pytest.approx(pred["accuracy"])
    proto = onnx.load(str(out / "pruned" / "model.onnx"))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    n = 0
    for node in proto.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            w = inits[node.input[1]]  # K x N; a 4x1 block = 4 consecutive N in one K row
            zero = np.all(w.reshape(w.shape[0], -1, 4) == 0, axis=2).mean()
            assert zero == pytest.approx(0.8, abs=0.01), (node.name, zero)
            n += 1
    assert n == 4 * summary["config"]["num_hidden_layers"]

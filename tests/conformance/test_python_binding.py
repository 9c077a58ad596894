"""The Python binding (python/spinel: ctypes over libspinel.so) on the real all-MiniLM-L6-v2 and
on the trained DNABERT-2 classifier of the `dnabert2_task` fixture.

* embed(texts, pool="mean", normalize=True) equals `spinel run --pool mean --normalize` on the
  same texts within 1e-6, and ONNX Runtime's mean-pooled, normalized last_hidden_state with
  cosine >= 0.99999; the ids it ran are HF's.
* run(ids) equals `spinel run --ids ... --pool none` within 1e-6; cls / mean pooling equal numpy
  on the returned rows; type ids, 2-D arrays and from_bytes give the same numbers.
* logits(texts) of the classifier equal PyTorch's (predictions.json) within 1e-4.
* Errors raise spinel.Error (a RuntimeError) with the C status and a message naming the
  argument; the session gives the same numbers afterwards.
* Two Python threads, each with its own session over one model, get the results of a
  session run alone.
* A missing library is a LibraryNotFoundError naming every place tried.

The package is imported from the repository's python/ folder with SPINEL_LIBRARY set to the
build's libspinel.so (what `pip install -e ./python` gives); tests/conformance/test_install.py
installs it with pip. The tests use the `capi` fixture: under tools/test.sh's ASan pass
(SPINEL_CAPI=0) they are deselected with the other in-process C API tests.
"""

import importlib
import json
import os
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI_ATOL = 1e-6
COS_MIN = 0.99999


@pytest.fixture(scope="module")
def sp(capi, spinel):
    """The spinel package from python/, bound to the build's library."""
    old = os.environ.get("SPINEL_LIBRARY")
    os.environ["SPINEL_LIBRARY"] = spinel.lib_path
    sys.path.insert(0, str(ROOT / "python"))
    try:
        mod = importlib.import_module("spinel")
        assert pathlib.Path(mod.__file__).resolve().parent == ROOT / "python" / "spinel", mod.__file__
        assert mod.library_path() == spinel.lib_path
    finally:
        sys.path.remove(str(ROOT / "python"))
        if old is None:
            del os.environ["SPINEL_LIBRARY"]
        else:
            os.environ["SPINEL_LIBRARY"] = old
    return mod


@pytest.fixture(scope="module")
def minilm(converted):
    return converted("minilm17")


@pytest.fixture(scope="module")
def model(sp, minilm):
    with sp.Model(minilm[1]) as m:
        yield m


def mean_normalized(rows):
    v = np.asarray(rows, dtype=np.float64).mean(axis=0)
    return v / np.linalg.norm(v)


def cli_embed(spinel, spnl, texts):
    rows = spinel.run_json(spnl, *[a for t in texts for a in ("--text", t)], "--pool", "mean", "--normalize",
                           "--batch-size", "64")
    return np.asarray([r["embedding"] for r in rows], dtype=np.float32)


def test_embed_equals_cli_and_ort(sp, spinel, minilm, model, sentences, hf_ids):
    import onnxruntime as ort

    onnx_path, spnl = minilm
    with model.session(threads=2) as s:
        got = s.embed(sentences, pool="mean", normalize=True)
        with s.run_texts(sentences) as r:
            assert [r.ids[r.offsets[i]:r.offsets[i + 1]].tolist() for i in range(len(r))] == hf_ids
    assert got.dtype == np.float32 and got.shape == (len(sentences), 384)
    cli = cli_embed(spinel, spnl, sentences)
    diff = np.abs(got - cli).max()
    print(f"Python embed vs CLI on {len(sentences)} sentences: max |diff| {diff:.2e}")
    assert diff <= CLI_ATOL

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(onnx_path), sess_options=so, providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    cos = []
    for i, ids in enumerate(hf_ids):
        feed = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros((1, len(ids)), np.int64)
        ref = mean_normalized(sess.run(["last_hidden_state"], feed)[0][0])
        cos.append(float(got[i].astype(np.float64) @ ref / np.linalg.norm(got[i])))
    print(f"Python embed vs ONNX Runtime: min cosine {min(cos):.7f}")
    assert min(cos) >= COS_MIN


def test_run_ids_equals_cli_and_pools(sp, spinel, minilm, model, hf_ids):
    _, spnl = minilm
    ids = hf_ids[:12]
    with model.session(threads=2) as s:
        result = s.run(ids)
        hidden, offsets = result
        assert hidden.dtype == np.float32 and hidden.shape == (sum(map(len, ids)), 384)
        assert offsets.tolist() == np.concatenate([[0], np.cumsum([len(x) for x in ids])]).tolist()
        assert len(result) == len(ids)
        cli = spinel.run_ids(spnl, ids, "none", ["--batch-size", "64"])
        for i, want in enumerate(cli):
            np.testing.assert_allclose(result.sequence(i), want, atol=CLI_ATOL, rtol=1e-7)
        # Pooling against numpy on the returned rows.
        cls = result.pooled("cls")
        mean = result.pooled("mean", normalize=False)
        for i in range(len(ids)):
            assert np.array_equal(cls[i], result.sequence(i)[0])
            np.testing.assert_allclose(mean[i], result.sequence(i).astype(np.float64).mean(0), atol=1e-6)
        np.testing.assert_allclose(result.pooled("mean", normalize=True), [mean_normalized(result.sequence(i))
                                                                          for i in range(len(ids))], atol=1e-6)
        # Explicit type ids 0, numpy rows and a 2-D array: the same numbers.
        again = s.run([np.asarray(x, np.int32) for x in ids], type_ids=[[0] * len(x) for x in ids])
        assert np.array_equal(again.hidden, hidden)
        same_len = np.asarray([x[:5] for x in ids if len(x) >= 5][:3])
        assert same_len.shape == (3, 5)
        square = s.run(same_len)
        assert np.array_equal(square.offsets, [0, 5, 10, 15])
        np.testing.assert_allclose(square.sequence(1), s.run([same_len[1]]).hidden, atol=1e-5)
        result.close()
        result.close()  # twice is fine
        with pytest.raises(ValueError, match="closed"):
            result.pooled("mean")
        assert result.hidden.shape == hidden.shape  # the copies stay


def test_info_tokenize_kernels_versions(sp, model, sentences, hf_ids):
    info = model.info
    assert (info["architecture"], info["hidden_size"], info["max_tokens"], info["vocab_size"]) == \
        ("bert", 384, 512, 30522)
    assert info["num_layers"] == 6 and info["num_heads"] == 12 and info["tokenizer"] == "wordpiece"
    assert info["outputs"][0] == {"name": "last_hidden_state", "width": 384, "per_token": True}
    assert "mean" in info["poolings"] and info["format_version"] == sp.format_version() == 3
    assert [model.tokenize(t) for t in sentences] == hf_ids
    assert model.tokenize(sentences[50], max_length=10) == hf_ids[50][:9] + [102]
    k = model.kernels()
    assert k["backend"] == "cpu" and len(k["ops"]) > 0 and all(o["kernel"] for o in k["ops"])
    assert model.kernels("reference")["backend"] == "reference"
    assert sp.version() == sp.__version__ == "0.1.0"
    assert sp.backends() == ["cpu", "reference"]


def test_from_bytes_equals_path(sp, minilm, model, sentences):
    data = pathlib.Path(minilm[1]).read_bytes()
    with model.session(threads=2) as s:
        want = s.embed(sentences[:8])
    for kind in (bytes, bytearray, memoryview):
        with sp.Model.from_bytes(kind(data), name="minilm bytes") as m, m.session(threads=2) as s:
            assert np.array_equal(s.embed(sentences[:8]), want), kind
    with pytest.raises(sp.Error) as e:
        sp.Model.from_bytes(data[:1000], name="the first kilobyte")
    assert e.value.status == 2 and "the first kilobyte" in e.value.message


def test_classifier_logits_equal_pytorch(sp, spinel, dnabert2_task, tmp_path):
    folder = dnabert2_task / "dense"
    spnl = tmp_path / "dense.spnl"
    spinel.cli("convert", folder / "model.onnx", "--tokenizer", folder / "tokenizer.json", "-o", spnl)
    held = json.loads((dnabert2_task / "heldout.json").read_text())
    want = np.asarray(json.loads((folder / "predictions.json").read_text())["logits"])
    n = 48
    with sp.Model(spnl) as m, m.session(threads=2) as s:
        assert m.info["architecture"] == "dnabert2" and m.info["default_pool"] == "logits"
        assert {"name": "logits", "width": want.shape[1], "per_token": False} in m.info["outputs"]
        logits = s.logits(held["sequences"][:n])
        assert logits.shape == (n, want.shape[1]) and logits.dtype == np.float32
        diff = np.abs(logits - want[:n]).max()
        print(f"Python logits vs PyTorch on {n} held-out sequences: max |diff| {diff:.2e}")
        assert diff <= 1e-4
        assert np.array_equal(logits.argmax(1), want[:n].argmax(1))
        # The model's default pooling is its logits; pool="logits" names them.
        assert np.array_equal(s.embed(held["sequences"][:n]), logits)
        assert np.array_equal(s.embed(held["sequences"][:n], pool="logits"), logits)


def test_errors_raise_and_the_session_stays_usable(sp, minilm, model, sentences, tmp_path):
    missing = tmp_path / "missing.spnl"
    with pytest.raises(sp.Error) as e:
        sp.Model(missing)
    assert isinstance(e.value, RuntimeError)
    assert (e.value.status, e.value.status_name) == (2, "SPINEL_INVALID_MODEL")
    assert str(missing) in e.value.message and "spinel_model_load" in e.value.message

    bad_options = [
        (dict(threads=-1), "threads is -1"),
        (dict(threads=100000), "threads is 100000"),
        (dict(backend="tpu"), "unknown backend 'tpu' (this build has: cpu, reference)"),
        (dict(backend="cuda"), "spinel was built without CUDA (configure with -DSPINEL_CUDA=ON)"),
        (dict(isa="sse9"), "isa: unknown instruction set 'sse9'"),
        (dict(max_batch=-1), "max_batch is -1"),
        (dict(max_tokens=-2), "max_tokens is -2"),
    ]
    for kw, msg in bad_options:
        with pytest.raises(sp.Error) as e:
            model.session(**kw)
        assert e.value.status == 1 and e.value.status_name == "SPINEL_INVALID_ARGUMENT", kw
        assert msg in e.value.message, (kw, e.value.message)

    texts = sentences[3:9]
    with model.session(threads=2, max_batch=6, max_tokens=400) as s:
        good = s.embed(texts)
        long_ids = [101] + [7592] * 600 + [102]
        bad_calls = [
            (lambda: s.run([[101, 7592, 102], [101, 99999, 102]]), sp.Error, "sequence 1, token 1: id 99999"),
            (lambda: s.run([[101, -3, 102]]), sp.Error, "id -3"),
            (lambda: s.run([[101, 7592, 102]], type_ids=[[0, 5, 0]]), sp.Error, "token type 5"),
            (lambda: s.run([long_ids]), sp.Error, "has 602 tokens; the model accepts at most 512"),
            (lambda: s.run([]), sp.Error, "num_seqs is 0"),
            (lambda: s.run([[]]), sp.Error, "sequence 0 has no tokens"),
            (lambda: s.embed([]), sp.Error, "num_texts is 0"),
            (lambda: s.embed(sentences[:7]), sp.Error, "max_batch of 6"),
            (lambda: s.run([[101] + [7592] * 200 + [102]] * 2), sp.Error, "max_tokens of 400"),
            (lambda: s.embed(texts, pool="max"), sp.Error, "pool: 'max' is not available"),
            (lambda: s.logits(texts), sp.Error, "no output 'logits' (it has: last_hidden_state)"),
            (lambda: s.run([[101, 7592, 102]], type_ids=[[0, 0]]), ValueError, "type_ids"),
            (lambda: s.run([[101, 2**40, 102]]), ValueError, "int32"),
            (lambda: s.embed(["a\0b"]), ValueError, "texts[0] contains a NUL"),
            (lambda: s.embed([None]), TypeError, "texts[0] must be a str"),
        ]
        for call, kind, msg in bad_calls:
            with pytest.raises(kind) as e:
                call()
            text = e.value.message if isinstance(e.value, sp.Error) else str(e.value)
            assert msg in text, (msg, text)
            if isinstance(e.value, sp.Error):
                assert e.value.status == 1 and msg in str(e.value)
            assert np.array_equal(s.embed(texts), good), msg
    with pytest.raises(ValueError, match="closed"):
        s.embed(texts)
    m = sp.Model(minilm[1])
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.session()


def test_two_sessions_in_two_threads(sp, model, sentences):
    halves = [sentences[:28], sentences[28:]]
    with model.session(threads=1) as alone:
        want = [alone.embed(h, pool="mean", normalize=True) for h in halves]
    got, errors = [None, None], []

    def work(i):
        try:
            with model.session(threads=1) as s:
                for _ in range(3):
                    got[i] = s.embed(halves[i], pool="mean", normalize=True)
                    if not np.array_equal(got[i], want[i]):
                        return
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(2):
        assert np.array_equal(got[i], want[i]), i


def test_library_not_found_names_where_it_looked(spinel, tmp_path):
    script = "import spinel\ntry:\n    spinel.version()\nexcept spinel.LibraryNotFoundError as e:\n" \
             "    print(e)\nelse:\n    print('LOADED', spinel.library_path())\n"
    env = {k: v for k, v in os.environ.items() if k not in ("SPINEL_LIBRARY", "LD_LIBRARY_PATH")}
    env["PYTHONPATH"] = str(ROOT / "python")
    env["SPINEL_LIBRARY"] = str(tmp_path / "nowhere" / "libspinel.so")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "SPINEL_LIBRARY" in p.stdout and str(tmp_path / "nowhere" / "libspinel.so") in p.stdout, p.stdout
    # Without it: next to the package, then the system loader (the build folder is not on its path).
    del env["SPINEL_LIBRARY"]
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "next to the package" in p.stdout and "the system loader" in p.stdout, p.stdout
    assert "cannot load libspinel.so" in p.stdout and "SPINEL_LIBRARY" in p.stdout
    # A folder in SPINEL_LIBRARY: the library inside it.
    env["SPINEL_LIBRARY"] = spinel.build_dir
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert p.stdout.strip() == f"LOADED {os.path.join(spinel.build_dir, 'libspinel.so.0')}", p.stdout + p.stderr

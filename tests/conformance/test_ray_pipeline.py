"""tools/ray_embed.py: the Ray Data pipeline (one spinel session per actor) on a local Ray.

The end-to-end test runs the tool as a user would (`--address local`, which starts Ray with
num_cpus = actors x threads = 2 and no dashboard) on 2000 short sentences with 2 actors x 1
thread and --ship-model (the model's bytes go through Ray's object store to
spinel.Model.from_bytes), then reads the Parquet back: every id exactly once, the texts, the
token counts, and the embeddings equal to the binding's own session.embed and to
`spinel run --pool mean`. The planner and the readers are also tested on their own (many small
ranges, an input longer than a range, FASTA records).
"""

import importlib.util
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

# Not `from conftest import ...`: with tests/hostile collected in the same run, the module named
# `conftest` may be that directory's. The sentences come through the conftest fixture.
ROOT = pathlib.Path(__file__).resolve().parents[2]

N_LINES = 2000


def _load_tool():
    spec = importlib.util.spec_from_file_location("ray_embed", ROOT / "tools" / "ray_embed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _corpus(sentences):
    """2000 short lines: the conftest sentences under 20 words, numbered so that each differs;
    every 9th line is left as it is (so the empty line occurs too)."""
    short = [s for s in sentences if len(s.split()) < 20]
    return [s if i % 9 == 0 else f"{s} ({i})" for i, s in ((i, short[i % len(short)]) for i in range(N_LINES))]


@pytest.fixture(scope="module")
def binding(capi, spinel):
    """The spinel package from python/, bound to the build's library (as test_python_binding.py)."""
    old = os.environ.get("SPINEL_LIBRARY")
    os.environ["SPINEL_LIBRARY"] = spinel.lib_path
    sys.path.insert(0, str(ROOT / "python"))
    try:
        mod = importlib.import_module("spinel")
        assert mod.library_path() == spinel.lib_path
    finally:
        sys.path.remove(str(ROOT / "python"))
        if old is None:
            del os.environ["SPINEL_LIBRARY"]
        else:
            os.environ["SPINEL_LIBRARY"] = old
    return mod


def test_plan_and_read_text_ranges(tmp_path):
    tool = _load_tool()
    lines = [f"line {i} " + "x" * (i % 50) for i in range(3000)]
    lines[1234] = "y" * 20000  # longer than a range: the range grows to hold it
    lines[77] = ""
    lines[78] = "crlf"
    path = tmp_path / "corpus.txt"
    path.write_bytes(("\n".join(lines[:78]) + "\ncrlf\r\n" + "\n".join(lines[79:]) + "\n").encode())
    ranges = tool.plan_ranges(str(path), False, 4096, min_ranges=2)
    assert len(ranges) > 20
    assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, no gap or overlap
    rows = [r for s, e, f in ranges for r in tool.read_range({"start": s, "end": e, "first_id": f}, str(path), False)]
    assert [r["id"] for r in rows] == list(range(len(lines)))
    assert [r["text"] for r in rows] == lines
    # No trailing newline: the last line is still an input.
    path.write_bytes(b"a\nb")
    rows = [r for s, e, f in tool.plan_ranges(str(path), False, 1)
            for r in tool.read_range({"start": s, "end": e, "first_id": f}, str(path), False)]
    assert rows == [{"id": 0, "text": "a"}, {"id": 1, "text": "b"}]


def test_plan_and_read_fasta_ranges(tmp_path):
    tool = _load_tool()
    rng = np.random.default_rng(0)
    recs = [(f"seq{i}", "".join(rng.choice(list("ACGTacgtN"), size=int(rng.integers(1, 400)))))
            for i in range(500)]
    text = ""
    for name, s in recs:
        text += f">{name} some description\n" + "\n".join(s[k:k + 60] for k in range(0, len(s), 60)) + "\n\n"
    path = tmp_path / "seqs.fa"
    path.write_text(text)
    ranges = tool.plan_ranges(str(path), True, 4096, min_ranges=4)
    assert len(ranges) > 10
    rows = [r for s, e, f in ranges for r in tool.read_range({"start": s, "end": e, "first_id": f}, str(path), True)]
    assert [r["id"] for r in rows] == list(range(len(recs)))
    assert [r["name"] for r in rows] == [n for n, _ in recs]
    assert [r["text"] for r in rows] == [s.upper() for _, s in recs]
    assert [r["length"] for r in rows] == [len(s) for _, s in recs]
    path.write_text(">ok\nACGT\n>bad\nACGX\n")
    with pytest.raises(ValueError, match="record 'bad'.*'X' is not a nucleotide letter"):
        tool.read_range({"start": 0, "end": path.stat().st_size, "first_id": 0}, str(path), True)


def test_ray_pipeline_matches_binding_and_cli(converted, spinel, binding, sentences, tmp_path):
    import pyarrow.parquet as pq

    _, spnl = converted("minilm17")
    lines = _corpus(sentences)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "embeddings"
    env = dict(os.environ, SPINEL_LIBRARY=spinel.lib_path, PYTHONPATH=str(ROOT / "python"), RAY_USAGE_STATS_ENABLED="0")
    started = time.perf_counter()
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "ray_embed.py"), str(spnl), "--input", str(corpus),
                        "-o", str(out), "--address", "local", "--actors", "2", "--threads", "1",
                        "--batch-size", "64", "--pool", "mean", "--ship-model",
                        "--library", spinel.lib_path, "--pythonpath", str(ROOT / "python")],
                       capture_output=True, text=True, env=env, timeout=600)
    seconds = time.perf_counter() - started
    assert p.returncode == 0, f"ray_embed.py failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    assert f"ray_embed: {N_LINES} inputs" in p.stderr
    print(f"ray_embed.py: {N_LINES} lines, 2 actors x 1 thread, {seconds:.1f} s including Ray start-up")

    table = pq.read_table(str(out))
    assert table.num_rows == N_LINES
    assert table.schema.field("embedding").type.value_type == "float"
    ids = table.column("id").to_numpy()
    assert sorted(ids.tolist()) == list(range(N_LINES))  # each id once
    order = np.argsort(ids)
    texts = [table.column("text")[int(i)].as_py() for i in order]
    assert texts == lines
    emb = np.stack([np.asarray(table.column("embedding")[int(i)].as_py(), dtype=np.float32) for i in order])
    tokens = table.column("tokens").to_numpy()[order]

    sample = sorted(set(np.random.default_rng(1).choice(N_LINES, size=100, replace=False).tolist()) | {0, 9, 1999})
    with binding.Model(str(spnl)) as model, model.session(threads=2) as session:
        assert emb.shape == (N_LINES, model.info["hidden_size"])
        direct = session.embed([lines[i] for i in sample], pool="mean")
        assert tokens[sample].tolist() == [len(model.tokenize(lines[i])) for i in sample]
    np.testing.assert_allclose(emb[sample], direct, rtol=0, atol=1e-5)

    few = [0, 1, 9, 500, 1999]
    args = []
    for i in few:
        args += ["--text", lines[i]]
    rows = spinel.run_json(spnl, *args, "--pool", "mean", "--threads", "2")
    cli = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
    np.testing.assert_allclose(emb[few], cli, rtol=0, atol=1e-5)

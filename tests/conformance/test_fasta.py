"""`spinel run --fasta` and `--chunk` on all-MiniLM-L6-v2.

MiniLM is an uncased text model, not a DNA one: its WordPiece cuts a DNA
string into pieces like "ac ##gt ##t", which is all these tests need (the
same ids whichever way the sequence arrives). Its "words" are capped at 100
characters (longer ones become [UNK]), so the records here stay shorter.
The classifier output (logits, probabilities) is tested on a tiny model with
a "logits" head in tests/unit/test_run_classifier.cpp.
"""

import numpy as np
import pytest

# Records as (name, description, sequence as written, lines it is wrapped into).
RECORDS = [
    ("chr1", "first record", "ACGTACGTTGCAACGGTACCATGCA", 1),
    ("lower", "", "acgtnnnnacgtttgcaaaccgt", 3),
    ("mixed", "soft-masked repeat", "ACGTacgtACGTnnRYKMswbdhvACGT", 4),
    ("rna", "", "ACGUUGCAUGC", 1),
    ("single", "x", "G", 1),
]


def wrap(seq, parts):
    step = max(1, -(-len(seq) // parts))
    return [seq[i:i + step] for i in range(0, len(seq), step)]


def fasta_text(records, newline="\n"):
    out = ["", ""]  # blank lines before the first header
    for name, desc, seq, parts in records:
        out.append(f">{name} {desc}".rstrip())
        for i, line in enumerate(wrap(seq, parts)):
            out.append(line)
            if i == 0:
                out.append("")  # a blank line inside the record
        out.append("")
    return newline.join(out) + newline


def expect_error(p, *needles, status=1):
    err = p.stderr
    assert p.returncode == status, f"exit {p.returncode}, expected {status}:\n{err[-2000:]}"
    assert p.stdout == "", "output on stdout for a failed run"
    low = err.lower()
    for n in needles:
        assert str(n).lower() in low, f"stderr does not mention {n!r}:\n{err[-2000:]}"
    for bad in ("segmentation", "core dumped", "terminate called", "sanitizer", "abort"):
        assert bad not in low
    return err


@pytest.fixture(scope="module")
def minilm(converted):
    return converted("minilm17")[1]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_fasta_equals_text(spinel, minilm, tmp_path, newline):
    fa = tmp_path / "seqs.fa"
    fa.write_bytes(fasta_text(RECORDS, newline).encode())
    rows = spinel.run_json(minilm, "--fasta", fa, "--threads", "2")
    assert [r["name"] for r in rows] == [r[0] for r in RECORDS]
    # Letters are upper-cased before tokenizing (the --help says so).
    texts = [seq.upper() for _, _, seq, _ in RECORDS]
    args = []
    for t in texts:
        args += ["--text", t]
    want = spinel.run_json(minilm, *args, "--threads", "2")
    for r, w, (name, desc, seq, _) in zip(rows, want, RECORDS):
        assert r["length"] == len(seq)
        assert r.get("description", "") == desc
        assert "text" not in r and "chunks" not in r
        assert r["tokens"] == w["tokens"]
        np.testing.assert_array_equal(np.asarray(r["embedding"]), np.asarray(w["embedding"]))


def test_fasta_table(spinel, minilm, tmp_path):
    fa = tmp_path / "seqs.fa"
    fa.write_text(fasta_text(RECORDS))
    p = spinel.cli("run", minilm, "--fasta", fa, "--format", "table")
    lines = p.stdout.splitlines()
    assert "bp" in lines[0] and "embedding" in lines[0]
    for (name, _, seq, _), line in zip(RECORDS, lines[1:]):
        assert name in line and f" {len(seq)} " in line
    assert "spinel run" in p.stderr  # the progress bar


BAD_FILES = {
    # name: (bytes, what the message names)
    "no_header": (b"ACGTACGT\n>a\nACGT\n", ["line 1", "before the first header"]),
    "empty_record": (b">a\nACGT\n>hollow desc\n\n>c\nACGT\n", ["line 3", "'hollow'", "no sequence"]),
    "empty_last": (b">a\nACGT\n>last\n", ["line 3", "'last'", "no sequence"]),
    "letters": (b">a\nACGT\n>prot\nACGT\nMKVLE\n", ["line 5", "'prot'", "'L'", "column 4"]),
    "gap": (b">a\nAC-GT\n", ["line 2", "'a'", "'-'"]),
    "binary": (b">a\nAC\x00\x01\x02GT\n", ["binary", "line 2"]),
    "not_utf8": (b">a\xff\xfe\nACGT\n", ["not utf-8", "line 1"]),
    "no_name": (b">\nACGT\n", ["line 1", "no name"]),
    "empty_file": (b"", ["no fasta record"]),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_fasta_is_an_error(spinel, minilm, tmp_path, kind):
    data, needles = BAD_FILES[kind]
    fa = tmp_path / f"{kind}.fa"
    fa.write_bytes(data)
    p = spinel.cli("run", minilm, "--fasta", fa, check=False)
    err = expect_error(p, str(fa), *needles)
    print(err.strip().splitlines()[-1])


def test_missing_fasta_file(spinel, minilm, tmp_path):
    p = spinel.cli("run", minilm, "--fasta", tmp_path / "absent.fa", check=False)
    expect_error(p, "absent.fa")


def test_skip_policy(spinel, minilm, tmp_path):
    fa = tmp_path / "mixed.fa"
    fa.write_bytes(b">good1\nACGT\n>hollow\n>bad\nACGT\nACXT\n>good2\nttgg\n")
    p = spinel.cli("run", minilm, "--fasta", fa, check=False)
    expect_error(p, "line 3", "'hollow'")
    p = spinel.cli("run", minilm, "--fasta", fa, "--on-bad-record", "error", check=False)
    expect_error(p, "'hollow'")
    rows = spinel.run_json(minilm, "--fasta", fa, "--on-bad-record", "skip")
    assert [r["name"] for r in rows] == ["good1", "good2"]
    p = spinel.cli("run", minilm, "--fasta", fa, "--on-bad-record", "skip")
    assert "warning" in p.stderr and "'hollow'" in p.stderr and "'bad'" in p.stderr and "'X'" in p.stderr
    # Nothing left: an error.
    fa.write_bytes(b">a\n>b\nAC*\n")
    p = spinel.cli("run", minilm, "--fasta", fa, "--on-bad-record", "skip", check=False)
    expect_error(p, "nothing to run")
    # A binary file stays an error.
    fa.write_bytes(b">a\nAC\x00GT\n")
    p = spinel.cli("run", minilm, "--fasta", fa, "--on-bad-record", "skip", check=False)
    expect_error(p, "binary")
    p = spinel.cli("run", minilm, "--fasta", fa, "--on-bad-record", "maybe", check=False)
    expect_error(p, "--on-bad-record", status=2)


LONG = ("ACGTTGCAACGGTACCATGCANNACGTAAGCTTGGCCAATTCGCGATATCCGGAATTCTAGAGGATCCCCGGG"
        "TACCGAGCTCGAATTCACTGGCCGTCGTTTT")[:96]  # under the 100 letters of a MiniLM "word"


def tokenize(spinel, spnl, text):
    import json
    p = spinel.cli("tokenize", spnl, "--text", text)
    return json.loads(p.stdout.splitlines()[0])["ids"]


def test_too_long_record_without_chunk(spinel, minilm, tmp_path):
    fa = tmp_path / "long.fa"
    fa.write_text(f">short\nACGT\n>long chr\n{LONG[:50]}\n{LONG[50:]}\n")
    n = len(tokenize(spinel, minilm, LONG))
    assert n > 20
    p = spinel.cli("run", minilm, "--fasta", fa, "--max-length", "20", check=False)
    expect_error(p, "record 'long'", f"{n} tokens", "limit of 20", "line 3", "--chunk")
    rows = spinel.run_json(minilm, "--fasta", fa, "--max-length", "20", "--on-bad-record", "skip")
    assert [r["name"] for r in rows] == ["short"]


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_chunk_is_the_weighted_mean_of_windows(spinel, minilm, tmp_path, pool):
    ids = tokenize(spinel, minilm, LONG)
    cls, content, sep = ids[0], ids[1:-1], ids[-1]
    window, overlap = 20, 5
    step = window - 2 - overlap
    spans, b = [], 0
    while True:
        e = min(len(content), b + window - 2)
        spans.append((b, e))
        if e == len(content):
            break
        b += step
    assert len(spans) >= 3
    windows = [[cls, *content[b:e], sep] for b, e in spans]
    per_window = spinel.run_ids(minilm, windows, pool=pool)
    weights = np.asarray([len(w) for w in windows], dtype=np.float64)
    want = (np.stack(per_window).astype(np.float64) * weights[:, None]).sum(0) / weights.sum()

    fa = tmp_path / "long.fa"
    fa.write_text(f">short\nACGT\n>long\n{LONG[:50]}\n{LONG[50:]}\n")
    rows = spinel.run_json(minilm, "--fasta", fa, "--chunk", f"{window}:{overlap}", "--pool", pool,
                           "--batch-size", "2")
    assert rows[0]["chunks"] == 1
    assert rows[1]["chunks"] == len(windows)
    assert rows[1]["tokens"] == len(ids)
    np.testing.assert_allclose(np.asarray(rows[1]["embedding"]), want, rtol=0, atol=2e-6)
    # The record that fits runs whole, as without --chunk.
    plain = spinel.run_json(minilm, "--fasta", fa, "--max-length", "512", "--pool", pool)
    np.testing.assert_array_equal(rows[0]["embedding"], plain[0]["embedding"])
    # --chunk on text inputs too, and --chunk-overlap.
    trows = spinel.run_json(minilm, "--text", LONG, "--max-length", str(window), "--chunk", "max",
                            "--chunk-overlap", str(overlap), "--pool", pool)
    assert trows[0]["chunks"] == len(windows)
    np.testing.assert_allclose(np.asarray(trows[0]["embedding"]), want, rtol=0, atol=2e-6)


def test_chunk_usage_errors(spinel, minilm, tmp_path):
    fa = tmp_path / "a.fa"
    fa.write_text(">a\nACGT\n")
    for bad in (["--chunk", "513"], ["--chunk", "2"], ["--chunk", "20:18"], ["--chunk", "abc"],
                ["--chunk", "20:-1"], ["--chunk-overlap", "3"], ["--chunk", "20", "--pool", "none"]):
        p = spinel.cli("run", minilm, "--fasta", fa, *bad, check=False)
        expect_error(p, "chunk", status=2)

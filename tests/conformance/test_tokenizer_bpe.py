"""BPE and SentencePiece tokenizers: spinel's ids must equal the reference's.

* A DNABERT-2-style BPE tokenizer.json (Whitespace pre-tokenizer, BPE over
  A/C/G/T with a ~4096 vocabulary, [UNK] [CLS] [SEP] [PAD] [MASK], the
  TemplateProcessing post-processor), trained here with HF `tokenizers` on
  generated DNA: >= 1000 sequences of 1-2000 bp, lower case, N, other IUPAC
  letters, empty; pairs and truncation; also through a .spnl (converted with
  a tiny random BERT graph, whose 30522-row embedding table holds the vocabulary).
* A RoBERTa-style byte-level BPE (ByteLevel pre-tokenizer with
  add_prefix_space, RobertaProcessing, <mask> with lstrip) trained here over
  >= 300 varied strings (accents, CJK, emoji, runs of spaces, contractions).
* SentencePiece .model files trained here with its trainer (a DNA BPE model
  and a unigram text model): ids equal to the `sentencepiece` package.
* Unsupported tokenizer.json features are clear errors naming the feature.

Everything goes through `spinel tokenize` (and `spinel convert`), so the
real binary, which links ONNX, also loads the SentencePiece shim.
"""

import json
import random

import pytest


SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
IUPAC_OTHER = "RYKMSWBDHV"


# ---- generated inputs -----------------------------------------------------------

def _species_seq(rng, n, species):
    """DNA with k-mer statistics that differ per 'species' (a biased Markov chain)."""
    bias = {0: "AACGT", 1: "GGCCA", 2: "TTTAG", 3: "ACGTA"}[species]
    out = []
    prev = rng.choice("ACGT")
    for _ in range(n):
        prev = rng.choice(bias + prev * 2 + "ACGT")
        out.append(prev)
    return "".join(out)


def _dna_corpus(seed=1, n=3000):
    rng = random.Random(seed)
    return [_species_seq(rng, rng.randint(50, 600), rng.randrange(4)) for _ in range(n)]


def _dna_test_inputs(seed=7, n=1100):
    rng = random.Random(seed)
    out = ["", "A", "N", "n", "ACGT", "acgt", "NNNN", "ACGTN", "RYKM", "ACGTRYACGT",
           "ACGT ACGT", "[CLS]ACGT[SEP]", "AC[MASK]GT", "ACGT\tACGT"]
    while len(out) < n:
        length = rng.choice([1, 2, 3, 5, 10, 50, 100, 300, 700, 1000, 1500, 2000, rng.randint(1, 2000)])
        s = list(_species_seq(rng, length, rng.randrange(4)))
        kind = rng.randrange(6)
        if kind == 1:
            s = [c.lower() for c in s]
        elif kind == 2:
            for _ in range(rng.randint(1, 20)):
                s[rng.randrange(len(s))] = "N"
        elif kind == 3:
            for _ in range(rng.randint(1, 10)):
                s[rng.randrange(len(s))] = rng.choice(IUPAC_OTHER + IUPAC_OTHER.lower())
        elif kind == 4:
            k = rng.randrange(len(s))
            s[k:k] = ["N"] * rng.randint(1, 50)
        elif kind == 5:
            s = [c.lower() if rng.random() < 0.3 else c for c in s]
        out.append("".join(s))
    return out


PIECES = [
    "café", "naïve", "Ångström", "façade", "jalapeño", "Straße", "İstanbul", "ΣΊΣΥΦΟΣ",
    "東京", "北京大学", "日本語のテキスト", "한국어", "Привет", "مرحبا", "שלום", "हिन्दी",
    "😀", "👍🏽", "🇫🇷", "👨‍👩‍👧", "🧬", "∑", "→", "½", "²", "Ⅻ", "۳", "١٢٣", "42", "3.14",
    "don't", "I'm", "we're", "they've", "she'll", "he'd", "it's", "'quoted'", "O'Neil",
    "hello", "world", "the", "quick", "brown", "fox", "Hello", "WORLD", "e-mail", "a.b",
    "C++", "#tag", "@user", "$100", "<s>", "</s>", "<mask>", "<unk>", "x<mask>y",
    "\u00a0", "\u3000", "\u2009", "\t", "  ", "   ", "\u200b", "\ufeff", "\u0301e", "e\u0301",
]


def _varied_strings(seed, n):
    rng = random.Random(seed)
    out = ["", " ", "  ", "a", " a", "a ", "hello world", "hello  world", "  leading",
           "trailing  ", "<mask>", "a <mask> b", "a<mask>b", "<s>hello</s>", "can't won't isn't",
           "Bonjour, ça va? Très bien!", "東京は日本の首都です。", "I ❤️ NY 🗽", "tab\there"]
    while len(out) < n:
        k = rng.randint(1, 12)
        parts = [rng.choice(PIECES) for _ in range(k)]
        seps = [rng.choice([" ", " ", " ", "", "  ", "\t", ", ", ".", "\u3000"]) for _ in range(k)]
        out.append("".join(p + s for p, s in zip(parts, seps)).rstrip("\n"))
    return out


# ---- running spinel ------------------------------------------------------------------

def _spinel_ids(spinel, source, texts, tmp_path, *extra, pair=None):
    """ids of `spinel tokenize` for each text (one per line of an --input file)."""
    for t in texts:
        assert "\n" not in t and "\r" not in t
    inp = tmp_path / "inputs.txt"
    inp.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    args = ["tokenize"]
    args += [source] if str(source).endswith(".spnl") else ["--tokenizer", source]
    args += ["--input", inp, *extra]
    if pair is not None:
        args += ["--pair", pair]
    p = spinel.cli(*args)
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == len(texts)
    return rows


def _compare(texts, rows, expected_ids, expected_types=None, what=""):
    bad = []
    for i, (t, r, ids) in enumerate(zip(texts, rows, expected_ids)):
        if r["ids"] != ids or (expected_types is not None and r["type_ids"] != expected_types[i]):
            bad.append((t[:80], r["ids"][:20], ids[:20]))
    assert not bad, f"{what}: {len(bad)} of {len(texts)} differ, e.g. {bad[:3]}"


# ---- the DNA BPE tokenizer.json ---------------------------------------------------

@pytest.fixture(scope="module")
def dna_bpe(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=SPECIALS, show_progress=False)
    tok.train_from_iterator(_dna_corpus(), trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    path = tmp_path_factory.mktemp("dna_bpe") / "tokenizer.json"
    tok.save(str(path))
    assert tok.get_vocab_size() > 3000
    return tok, path


def test_dna_bpe_ids_equal_hf(spinel, dna_bpe, tmp_path):
    tok, path = dna_bpe
    texts = _dna_test_inputs()
    assert len(texts) >= 1000
    want = [e.ids for e in tok.encode_batch(texts)]
    rows = _spinel_ids(spinel, path, texts, tmp_path)
    _compare(texts, rows, want, what="DNA BPE")
    # Long sequences really are split by merges, not [UNK]s.
    assert sum(len(w) for w in want) < sum(len(t) for t in texts) / 2


def test_dna_bpe_truncation_and_pairs(spinel, dna_bpe, tmp_path):
    tok, path = dna_bpe
    texts = _dna_test_inputs(seed=11, n=150)
    tok.enable_truncation(64)
    try:
        want = [e.ids for e in tok.encode_batch(texts)]
        rows = _spinel_ids(spinel, path, texts, tmp_path, "--max-length", "64")
        _compare(texts, rows, want, what="DNA BPE, max_length 64")
        assert any(r["truncated"] for r in rows)
        b = "ACGTTGCAACGTAGCTAGCTAGGATCCA"
        want = [tok.encode(t, b) for t in texts]
        rows = _spinel_ids(spinel, path, texts, tmp_path, "--max-length", "64", pair=b)
        _compare(texts, rows, [e.ids for e in want], [e.type_ids for e in want], "DNA BPE pairs")
    finally:
        tok.no_truncation()


def test_dna_bpe_inside_spnl(spinel, export, dna_bpe, tmp_path):
    """convert embeds the BPE tokenizer; the .spnl gives the same ids."""
    tok, path = dna_bpe
    out = tmp_path / "minilm_dna.spnl"
    spinel.convert(export("tiny17"), out, "--tokenizer", path)
    info = json.loads(spinel.cli("inspect", out, "--json").stdout)
    assert info["tokenizer"]["type"] == "bpe"
    assert info["tokenizer"]["vocab_size"] == tok.get_vocab_size()
    texts = _dna_test_inputs(seed=3, n=200)
    rows = _spinel_ids(spinel, out, texts, tmp_path)
    _compare(texts, rows, [e.ids for e in tok.encode_batch(texts)], what="DNA BPE from .spnl")
    # And the model runs on it.
    run = spinel.run_json(out, "--text", "ACGTACGTNNACGT", "--pool", "mean")
    assert run[0]["tokens"] == len(tok.encode("ACGTACGTNNACGT").ids)


# ---- the RoBERTa-style byte-level BPE -------------------------------------------

@pytest.fixture(scope="module")
def roberta_bpe(tmp_path_factory):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200, min_frequency=2, show_progress=False,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=True)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_varied_strings(5, 3000), trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")))
    path = tmp_path_factory.mktemp("roberta_bpe") / "tokenizer.json"
    tok.save(str(path))
    return tok, path


def test_byte_level_bpe_ids_equal_hf(spinel, roberta_bpe, tmp_path):
    tok, path = roberta_bpe
    texts = _varied_strings(99, 400)
    want = [e.ids for e in tok.encode_batch(texts)]
    rows = _spinel_ids(spinel, path, texts, tmp_path)
    _compare(texts, rows, want, what="byte-level BPE")
    rows = _spinel_ids(spinel, path, texts[:100], tmp_path, pair="second text, ça va 😀")
    want = [tok.encode(t, "second text, ça va 😀") for t in texts[:100]]
    _compare(texts, rows, [e.ids for e in want], [e.type_ids for e in want], "byte-level pairs")


def test_byte_level_bpe_without_prefix_space(spinel, roberta_bpe, tmp_path):
    from tokenizers import Tokenizer, normalizers, pre_tokenizers

    tok = Tokenizer.from_str(roberta_bpe[0].to_str())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.normalizer = normalizers.Lowercase()
    path = tmp_path / "gpt2_style.json"
    tok.save(str(path))
    texts = _varied_strings(123, 300)
    _compare(texts, _spinel_ids(spinel, path, texts, tmp_path),
             [e.ids for e in tok.encode_batch(texts)], what="byte-level, no prefix space, lowercase")


def test_merges_in_pair_form(spinel, dna_bpe, tmp_path):
    """tokenizers >= 0.20 writes merges as ["a", "b"]; both forms load."""
    tok, path = dna_bpe
    doc = json.loads(path.read_text())
    doc["model"]["merges"] = [m.split(" ") for m in doc["model"]["merges"]]
    p2 = tmp_path / "pairs.json"
    p2.write_text(json.dumps(doc))
    texts = _dna_test_inputs(seed=5, n=50)
    _compare(texts, _spinel_ids(spinel, p2, texts, tmp_path),
             [e.ids for e in tok.encode_batch(texts)], what="merges as pairs")


# ---- unsupported tokenizer.json ---------------------------------------------------

def _tokenize_error(spinel, path):
    p = spinel.cli("tokenize", "--tokenizer", path, "--text", "ACGT", check=False)
    assert p.returncode == 1, p.stdout
    assert str(path) in p.stderr
    return p.stderr


@pytest.mark.parametrize("model_type", ["WordLevel", "Unigram"])
def test_unsupported_model_type(spinel, tmp_path, model_type):
    from tokenizers import Tokenizer, models

    m = models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]") if model_type == "WordLevel" \
        else models.Unigram([("[UNK]", 0.0), ("a", -1.0)], 0)
    path = tmp_path / f"{model_type}.json"
    Tokenizer(m).save(str(path))
    err = _tokenize_error(spinel, path)
    assert f'model type is "{model_type}"' in err
    assert "WordPiece or BPE" in err


@pytest.mark.parametrize("section,value,named", [
    ("normalizer", {"type": "NFKC"}, '"NFKC"'),
    ("pre_tokenizer", {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
                       "split": True}, '"Metaspace"'),
    ("post_processor", {"type": "Foo"}, '"Foo"'),
    ("model.dropout", 0.1, "dropout"),
])
def test_unsupported_feature(spinel, dna_bpe, tmp_path, section, value, named):
    doc = json.loads(dna_bpe[1].read_text())
    if section.startswith("model."):
        doc["model"][section.split(".")[1]] = value
    else:
        doc[section] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    err = _tokenize_error(spinel, path)
    assert named in err
    assert section.split(".")[0] in err


# ---- SentencePiece --------------------------------------------------------------------

@pytest.fixture(scope="module")
def spm_models(tmp_path_factory):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("spm")
    dna = d / "dna_corpus.txt"
    dna.write_text("\n".join(_dna_corpus(seed=2, n=1500)) + "\n")
    spm.SentencePieceTrainer.train(input=str(dna), model_prefix=str(d / "dna_bpe"), vocab_size=1000,
                                   model_type="bpe", minloglevel=2, max_sentence_length=10000)
    text = d / "text_corpus.txt"
    text.write_text("\n".join(_varied_strings(8, 3000)) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(d / "text_unigram"),
                                   vocab_size=300, model_type="unigram", minloglevel=2, hard_vocab_limit=False,
                                   character_coverage=1.0)
    return d / "dna_bpe.model", d / "text_unigram.model"


@pytest.mark.parametrize("which", ["dna_bpe", "text_unigram"])
def test_sentencepiece_ids_equal_package(spinel, spm_models, tmp_path, which):
    import sentencepiece as spm

    path = spm_models[0] if which == "dna_bpe" else spm_models[1]
    sp = spm.SentencePieceProcessor(model_file=str(path))
    texts = _dna_test_inputs(seed=9, n=400) if which == "dna_bpe" else _varied_strings(77, 400)
    # spinel wraps the pieces in the model's bos/eos (<s> a </s>).
    want = [[sp.bos_id()] + sp.encode(t) + [sp.eos_id()] for t in texts]
    rows = _spinel_ids(spinel, path, texts, tmp_path)
    _compare(texts, rows, want, what=f"SentencePiece {which}")


def test_sentencepiece_inside_spnl(spinel, export, spm_models, tmp_path):
    """The .model bytes travel in the .spnl; the real binary (ONNX linked) loads SentencePiece."""
    import sentencepiece as spm

    out = tmp_path / "minilm_spm.spnl"
    spinel.convert(export("tiny17"), out, "--tokenizer", spm_models[1])
    info = json.loads(spinel.cli("inspect", out, "--json").stdout)
    assert info["tokenizer"]["type"] == "sentencepiece"
    assert "unigram" in info["tokenizer"]["description"]
    sp = spm.SentencePieceProcessor(model_file=str(spm_models[1]))
    texts = _varied_strings(31, 100)
    rows = _spinel_ids(spinel, out, texts, tmp_path)
    _compare(texts, rows, [[sp.bos_id()] + sp.encode(t) + [sp.eos_id()] for t in texts],
             what="SentencePiece from .spnl")


def test_sentencepiece_bad_model_file(spinel, tmp_path):
    path = tmp_path / "garbage.model"
    path.write_bytes(b"\x00\x01not a protobuf at all\xff" * 10)
    p = spinel.cli("tokenize", "--tokenizer", path, "--text", "a", check=False)
    assert p.returncode == 1
    assert str(path) in p.stderr and "SentencePiece" in p.stderr

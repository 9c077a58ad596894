#!/usr/bin/env python3
"""Generates the hostile-file corpus from one valid .spnl and the ONNX export it came from.

    make_corpus.py --spnl GOOD.spnl --onnx-dir DIR -o OUTDIR

DIR holds model.onnx (inline weights) and tokenizer.json. OUTDIR gets the damaged
files and manifest.json: one entry per (case, command) with

    id        "<case>/<command>"
    argv      spinel's arguments; paths are relative to OUTDIR (run with cwd=OUTDIR)
    what      what the case tests
    expect    substrings stderr must contain, case-insensitive (a list inside the list
              means any one of them)
    exit      "fail" (exit status > 0), 2 (a usage error) or "any" (success allowed)
    timeout   seconds; a FIFO must be refused promptly, not waited on
    unchanged path -> snapshot taken here; the path must look the same afterwards
    absent    paths that must not exist afterwards (the output of a failed convert)
    listings  folder -> names in it; afterwards the same (no temp file left behind),
              apart from `may_create`

The files are made from the valid ones at test time (tests/hostile/test_hostile.py),
so a format change carries over as long as spnl_format.py follows it. Every
damaged .spnl has its checksums resealed, so it reaches the check it is about,
unless the case is about the checksums.
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import stat
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spnl_format as F  # noqa: E402

U32 = 2 ** 32
U64 = 2 ** 64
I32_MAX = 2 ** 31 - 1
SPNL_COMMANDS = ("inspect", "run")
RUN_ARGS = ("--text", "hi")

# ---- the valid file, parsed once ------------------------------------------------------


class Ctx:
    """The valid .spnl and where its fields are."""

    def __init__(self, good):
        self.good = bytes(good)
        F.check_layout(self.good)
        self.n = len(self.good)
        self.h = F.read_header(self.good)
        self.cfg = F.walk_config(self.good)
        self.tok = F.walk_tokenizer(self.good)
        self.graph = F.walk_graph(self.good)
        self.tensors = F.walk_tensors(self.good)
        self.ops = self.graph["ops"]
        self.nvalues = len(self.graph["values"])
        self.ntensors = len(self.tensors)
        self.EMB = self.find_op(lambda o: o["kind"].value == F.EMBEDDING)
        self.QKV = self.find_op(lambda o: o["kind"].value == F.LINEAR)
        self.ATT = self.find_op(lambda o: o["kind"].value == F.ATTENTION)
        self.RES = self.find_op(lambda o: o["kind"].value == F.LINEAR and o["in1"].value != -1)
        self.FFN = self.find_op(lambda o: o["kind"].value == F.LINEAR and "act" in o["attrs"])
        self.LN = self.find_op(lambda o: o["kind"].value == F.LAYERNORM)
        assert self.QKV < self.FFN, "the first Linear should come before the first FFN Linear"

    def find_op(self, pred):
        return next(i for i, o in enumerate(self.ops) if pred(o))

    def opname(self, i):
        return self.ops[i]["name"].text

    def tensor(self, i):
        return self.tensors[i]

    def tensor_of(self, op, slot):
        return self.tensors[self.ops[op]["w"][slot].value]

    def edit(self, *pokes, reseal=True):
        """Copy with (field, value) pairs written, resealed unless asked not to."""
        b = bytearray(self.good)
        for field, value in pokes:
            F.poke(b, field, value)
        return F.reseal(b) if reseal else b

    def header(self, fn, reseal=True):
        b = bytearray(self.good)
        h = F.read_header(b)
        fn(h)
        F.write_header(b, h)
        return F.reseal(b) if reseal else b

    def rename_token(self, token_id, new):
        s = self.tok["vocab"][token_id]
        return F.splice(self.good, s.length.at, s.end, F.pack_str(new))

    def token_id(self, text):
        return next(i for i, s in enumerate(self.tok["vocab"]) if s.text == text)

    def boundaries(self):
        o, s = self.h["offsets"], self.h["sizes"]
        return {"config_start": o[0], "tokenizer_start": o[1], "graph_start": o[2],
                "tensors_start": o[3], "tensors_end": o[3] + s[3], "data_start": o[4],
                "data_mid": o[4] + s[4] // 2, "file_end": self.n}


def flip(b, at, mask=0x01):
    b = bytearray(b)
    b[at] ^= mask
    return b


# ---- .spnl cases ------------------------------------------------------------------------
# Each is (name, what, fn(ctx) -> (bytes, needles)). Names do not depend on the
# file, so pytest can list the cases before the corpus exists.

SPNL_CASES = []


def case(name, what, fn):
    SPNL_CASES.append((name, what, fn))


# Header.
case("empty", "an empty file", lambda c: (b"", ["header"]))
case("header_127_bytes", "one byte shorter than the header", lambda c: (c.good[:127], ["header"]))
case("bad_magic", "wrong magic", lambda c: (c.header(lambda h: h.update(magic=b"XPINEL\x1a\n")),
                                            ["magic"]))
case("zero_magic", "magic all zeros", lambda c: (c.header(lambda h: h.update(magic=bytes(8))),
                                                 ["magic"]))
for _v in (0, 1, 2, 4, U32 - 1):
    case(f"version_{_v}", f"format version {_v}",
         lambda c, v=_v: (c.header(lambda h: h.update(version=v)), ["version", str(v)]))
case("endian_swapped", "the byte-order tag of a big-endian writer",
     lambda c: (c.header(lambda h: h.update(endian=0x04030201)), [["byte order", "endian"]]))
case("file_size_field_larger", "header file_size one more than the file",
     lambda c: (c.header(lambda h: h.update(size=c.n + 1)), [["truncated", "size"]]))
case("file_size_field_huge", "header file_size 2^64-1",
     lambda c: (c.header(lambda h: h.update(size=U64 - 1)), [["truncated", "size"]]))
case("file_size_field_smaller", "header file_size one less than the file",
     lambda c: (c.header(lambda h: h.update(size=c.n - 1)), [["extended", "size", "truncated"]]))
case("extended_one_byte", "one byte appended to a valid file",
     lambda c: (c.good + b"\0", [["extended", "size", "truncated"]]))

# Truncation at every section boundary and +-1: as cut (the header's file size
# disagrees), and with the header patched to the cut size (the section checks).
_CUTS = [(b, d) for b in ("config_start", "tokenizer_start", "graph_start", "tensors_start",
                          "tensors_end", "data_start") for d in (-1, 0, 1)]
_CUTS += [("data_mid", 0), ("file_end", -1)]


def _cut_name(b, d):
    return f"cut_{b}" + {-1: "_minus1", 0: "", 1: "_plus1"}[d]


def _cut(c, b, d):
    p = c.boundaries()[b] + d
    return c.good[:p], [["header"] if p < F.HEADER_SIZE else ["truncated", "size"]]


def _cut_patched(c, b, d):
    """Cut, with file_size = the cut: the first section that is not wholly inside must be named."""
    p = c.boundaries()[b] + d
    buf = bytearray(c.good[:p])
    h = F.read_header(buf)
    h["size"] = p
    F.write_header(buf, h)
    F.reseal(buf)
    first = next(s for s in range(5) if h["offsets"][s] + h["sizes"][s] > p)
    return buf, [F.SECTION_NAMES[first]]


for _b, _d in _CUTS:
    case(_cut_name(_b, _d), f"file cut at {_b}{_d:+d}", lambda c, b=_b, d=_d: _cut(c, b, d))
    if (_b, _d) != ("config_start", -1):  # a cut header cannot be patched
        case(_cut_name(_b, _d) + "_patched", f"cut at {_b}{_d:+d}, header file_size patched to match",
             lambda c, b=_b, d=_d: _cut_patched(c, b, d))


def _cut_data_consistent(c):
    """Cut in the data section with file_size and the data size both patched: the tensor
    table's entries then point past the data section."""
    p = c.boundaries()["data_mid"]
    buf = bytearray(c.good[:p])
    h = F.read_header(buf)
    h["size"] = p
    h["sizes"][F.DATA] = p - h["offsets"][F.DATA]
    F.write_header(buf, h)
    F.reseal(buf)
    first = next(e for e in c.tensors if e.offset.value + e.nbytes.value > h["sizes"][F.DATA])
    return buf, [first.name.text]


case("cut_data_mid_sizes_patched", "cut mid-data, file and data sizes patched: blobs lie outside",
     _cut_data_consistent)

# Section offsets and sizes: negative (as u64), 2^63, 0, at/after the end, wrapping.
for _s, _sec in enumerate(F.SECTIONS):
    _name = F.SECTION_NAMES[_s]
    for _label, _fn in [
            ("offset_neg1", lambda h, c, s: h["offsets"].__setitem__(s, U64 - 1)),
            ("offset_2p63", lambda h, c, s: h["offsets"].__setitem__(s, 2 ** 63)),
            ("offset_zero", lambda h, c, s: h["offsets"].__setitem__(s, 0)),
            ("offset_at_end", lambda h, c, s: h["offsets"].__setitem__(s, c.n)),
            ("offset_past_end", lambda h, c, s: h["offsets"].__setitem__(s, c.n + 64)),
            ("size_neg1", lambda h, c, s: h["sizes"].__setitem__(s, U64 - 1)),
            ("size_wraps", lambda h, c, s: h["sizes"].__setitem__(s, U64 - h["offsets"][s])),
            ("size_plus1", lambda h, c, s: h["sizes"].__setitem__(s, h["sizes"][s] + 1))]:
        case(f"{_sec}_{_label}", f"{_name} section: {_label.replace('_', ' ')}",
             lambda c, s=_s, fn=_fn, nm=_name: (c.header(lambda h: fn(h, c, s)), [nm]))


def _set_offset(s, value_fn, size_fn=None):
    """A header edit: section s's offset (and size) from the header's current values."""
    def fn(h):
        h["offsets"][s] = value_fn(h)
        if size_fn:
            h["sizes"][s] = size_fn(h)
    return fn


case("config_overlaps_header", "config section starts inside the header",
     lambda c: (c.header(_set_offset(F.CONFIG, lambda h: 64)), ["config"]))
case("tokenizer_overlaps_config", "tokenizer section offset = config offset",
     lambda c: (c.header(_set_offset(F.TOKENIZER, lambda h: h["offsets"][F.CONFIG])), ["tokenizer"]))
case("graph_overlaps_tokenizer", "graph section offset = tokenizer offset",
     lambda c: (c.header(_set_offset(F.GRAPH, lambda h: h["offsets"][F.TOKENIZER])), ["graph"]))
case("tensors_overlap_graph", "tensor table offset = graph offset",
     lambda c: (c.header(_set_offset(F.TENSORS, lambda h: h["offsets"][F.GRAPH])), ["tensor"]))
case("tensors_reach_into_data", "tensor table moved to overlap the data section",
     lambda c: (c.header(_set_offset(F.TENSORS, lambda h: h["offsets"][F.DATA] - 8)),
                ["tensor table"]))
case("data_overlaps_metadata", "data section starts at 128, over the metadata",
     lambda c: (c.header(_set_offset(F.DATA, lambda h: 128, lambda h: c.n - 128)), ["data"]))
case("data_offset_unaligned", "data section offset not 64-byte aligned",
     lambda c: (c.header(_set_offset(F.DATA, lambda h: h["offsets"][F.DATA] + 8,
                                     lambda h: h["sizes"][F.DATA] - 8)), ["data", "align"]))

# Counts near 2^31 and 2^32 (u32 counts), 2^63 and 2^64 (u64 counts), and string lengths.
_BIG32 = {"2p31m1": I32_MAX, "2p31": 2 ** 31, "2p32m1": U32 - 1}
for _k, _v in _BIG32.items():
    case(f"value_count_{_k}", f"graph value count {_v}",
         lambda c, v=_v: (c.edit((c.graph["value_count"], v)), ["value count"]))
    case(f"op_count_{_k}", f"graph op count {_v}",
         lambda c, v=_v: (c.edit((c.graph["op_count"], v)), ["op count"]))
    case(f"tensor_count_{_k}", f"tensor count {_v}",
         lambda c, v=_v: (c.edit((F.tensor_count_field(c.good), v)), ["tensor", "count"]))
    case(f"vocab_count_{_k}", f"tokenizer vocabulary count {_v}",
         lambda c, v=_v: (c.edit((c.tok["vocab_count"], v)), ["vocab"]))
    case(f"added_count_{_k}", f"tokenizer added-token count {_v}",
         lambda c, v=_v: (c.edit((c.tok["added_count"], v)), ["added"]))
case("value_count_zero", "graph with no values (the rest misparsed)",
     lambda c: (c.edit((c.graph["value_count"], 0)), ["graph"]))
case("op_count_zero", "graph with no ops (the rest misparsed)",
     lambda c: (c.edit((c.graph["op_count"], 0)), ["graph"]))
case("tensor_count_zero", "tensor table with no tensors (the rest misparsed)",
     lambda c: (c.edit((F.tensor_count_field(c.good), 0)), ["tensor"]))
case("vocab_count_zero", "tokenizer with an empty vocabulary (the rest misparsed)",
     lambda c: (c.edit((c.tok["vocab_count"], 0)), ["vocab"]))

# String lengths (u32).
_STRINGS = {
    "architecture": (lambda c: c.cfg["architecture"], ["architecture"]),
    "source": (lambda c: c.cfg["source"], ["source"]),
    "unk_token": (lambda c: c.tok["unk_token"], ["unk"]),
    "vocab_token": (lambda c: c.tok["vocab"][1000], ["vocab token"]),
    "added_token": (lambda c: c.tok["added"][0]["content"], ["added token"]),
    "value_name": (lambda c: c.graph["values"][0]["name"], ["value name"]),
    "op_name": (lambda c: c.ops[c.QKV]["name"], ["op name"]),
    "tensor_name": (lambda c: c.tensors[3].name, ["tensor name"]),
}
for _s, (_get, _needles) in _STRINGS.items():
    for _k, _v in (("2p31", 2 ** 31), ("2p32m1", U32 - 1)):
        case(f"strlen_{_s}_{_k}", f"length of a {_s.replace('_', ' ')} string = {_v}",
             lambda c, g=_get, v=_v, n=_needles: (c.edit((g(c).length, v)), n))

# Shapes: ndim (u64) and dimensions (i64) near 2^31 and 2^63, negative.
_T = 3  # a tensor in the middle of the table
for _k, _v in (("2p31", 2 ** 31), ("2p63", 2 ** 63), ("2p64m1", U64 - 1), ("9", 9)):
    case(f"tensor_ndim_{_k}", f"tensor ndim {_v}",
         lambda c, v=_v: (c.edit((c.tensor(_T).ndim, v)),
                          [["shape", "dimension", c.tensor(_T).name.text]]))
for _k, _v in (("2p31", 2 ** 31), ("2p62", 2 ** 62), ("2p63m1", 2 ** 63 - 1), ("neg1", -1),
               ("neg2p63", -2 ** 63), ("zero", 0)):
    case(f"tensor_dim_{_k}", f"a tensor dimension of {_v}",
         lambda c, v=_v: (c.edit((c.tensor(_T).shape[0], v)), [c.tensor(_T).name.text]))


def _dims_product(c):
    """Each dimension fits the data section, the product does not (and wraps in 64 bits)."""
    e = next(e for e in c.tensors if len(e.shape) == 2)
    return c.edit((e.shape[0], 2 ** 32), (e.shape[1], 2 ** 32)), [e.name.text]


def _dims_product_small(c):
    e = next(e for e in c.tensors if len(e.shape) == 2)
    d = 1 << (c.h["sizes"][F.DATA].bit_length() - 1)  # <= data size, product far beyond it
    return c.edit((e.shape[0], d), (e.shape[1], d)), [e.name.text]


case("tensor_dims_product_wraps", "dimensions 2^32 x 2^32 (product wraps to 0 in 64 bits)",
     _dims_product)
case("tensor_dims_product_huge", "two dimensions each within the data size, product beyond",
     _dims_product_small)

# Config sizes.
for _f, _v in [("vocab_size", -1), ("vocab_size", 2 ** 62), ("hidden_size", 2 ** 63 - 1),
               ("hidden_size", 0), ("hidden_size", 2 ** 31 + 64), ("num_heads", 0),
               ("num_heads", -4), ("num_heads", 3), ("num_layers", -1),
               ("intermediate_size", 2 ** 62), ("type_vocab_size", -2 ** 63),
               ("max_position", 0), ("max_position", -1), ("max_position", 2 ** 31),
               ("max_position", 2 ** 20 + 1), ("max_position", 2 ** 63 - 1)]:
    _k = str(_v) if _v >= 0 else "neg" + str(-_v)
    case(f"config_{_f}_{_k}", f"config {_f} = {_v}",
         lambda c, f=_f, v=_v: (c.edit((c.cfg[f], v)), [f]))


def _max_position_past_table(c):
    rows = c.tensor_of(c.EMB, 1).shape[0].value
    return c.edit((c.cfg["max_position"], rows + 1)), ["position"]


case("config_max_position_past_table", "max_position one more than the position table's rows",
     _max_position_past_table)
case("config_hidden_size_differs", "hidden_size half the graph's width",
     lambda c: (c.edit((c.cfg["hidden_size"], c.cfg["hidden_size"].value // 2)), ["hidden_size"]))
case("config_vocab_size_differs", "vocab_size one less than the word table's rows",
     lambda c: (c.edit((c.cfg["vocab_size"], c.cfg["vocab_size"].value - 1)), ["vocab_size"]))
case("config_hidden_act_unknown", "hidden_act 'gelu_quick'",
     lambda c: (F.splice(c.good, c.cfg["hidden_act"].length.at, c.cfg["hidden_act"].end,
                         F.pack_str("gelu_quick")), ["hidden_act", "gelu_quick"]))
case("config_architecture_gpt2", "architecture 'gpt2'",
     lambda c: (F.splice(c.good, c.cfg["architecture"].length.at, c.cfg["architecture"].end,
                         F.pack_str("gpt2")), ["gpt2"]))

# NaN / Inf / 0 / negative floats.
_FLOATS = {"nan": math.nan, "inf": math.inf, "neginf": -math.inf, "zero": 0.0, "neg": -1e-5,
           "big": 2.0}
for _k, _v in _FLOATS.items():
    case(f"config_layer_norm_eps_{_k}", f"config layer_norm_eps = {_v}",
         lambda c, v=_v: (c.edit((c.cfg["layer_norm_eps"], v)), ["layer_norm_eps"]))
    case(f"layernorm_eps_{_k}", f"LayerNorm op eps = {_v}",
         lambda c, v=_v: (c.edit((c.ops[c.LN]["eps"], v)), ["eps", c.opname(c.LN)]))
    case(f"embedding_eps_{_k}", f"Embedding op eps = {_v}",
         lambda c, v=_v: (c.edit((c.ops[c.EMB]["eps"], v)), ["eps", c.opname(c.EMB)]))
for _k, _v in (("nan", math.nan), ("inf", math.inf), ("zero", 0.0), ("neg", -0.25)):
    case(f"attention_scale_{_k}", f"Attention op scale = {_v}",
         lambda c, v=_v: (c.edit((c.ops[c.ATT]["scale"], v)), ["scale", c.opname(c.ATT)]))
case("linear_act_scale_nan", "f32 Linear with a NaN static activation scale",
     lambda c: (F.add_op_attr(c.good, c.QKV, "act_scale", F.F32, math.nan), [c.opname(c.QKV)]))
case("linear_act_zp_256", "f32 Linear with activation zero point 256",
     lambda c: (F.add_op_attr(c.good, c.QKV, "act_zp", F.I64, 256), [c.opname(c.QKV)]))

# Graph: value widths, op kinds and enums.
for _k, _v in (("2p31", 2 ** 31), ("2p63m1", 2 ** 63 - 1), ("neg1", -1), ("zero", 0)):
    case(f"value_width_{_k}", f"a value of width {_v}",
         lambda c, v=_v: (c.edit((c.graph["values"][1]["width"], v)), ["width"]))
for _k, _v in (("0", 0), ("6", 6), ("2p32m1", U32 - 1)):
    case(f"op_kind_{_k}", f"op kind {_v}",
         lambda c, v=_v: (c.edit((c.ops[c.QKV]["kind"], v)), ["op kind"]))
case("op_kind_linear_as_layernorm", "a Linear op relabelled LayerNorm",
     lambda c: (c.edit((c.ops[c.QKV]["kind"], F.LAYERNORM)), [c.opname(c.QKV)]))
case("op_kind_linear_as_pool", "a Linear op relabelled Pool",
     lambda c: (c.edit((c.ops[c.QKV]["kind"], F.POOL)), [c.opname(c.QKV)]))
case("op_act_unknown", "activation 'swish'",
     lambda c: (F.add_op_attr(c.good, c.QKV, "act", F.STR, "swish"), ["activation", "swish"]))
case("op_precision_unknown", "precision 'int4'",
     lambda c: (F.add_op_attr(c.good, c.QKV, "precision", F.STR, "int4"), ["precision", "int4"]))
case("op_precision_s8_on_f32_weights", "Linear marked s8 whose weights are f32",
     lambda c: (F.add_op_attr(c.good, c.QKV, "precision", F.STR, "s8-sparse"), [c.opname(c.QKV)]))
for _k, _v in (("zero", 0), ("neg1", -1), ("3", 3), ("2p31m1", I32_MAX)):
    case(f"attention_num_heads_{_k}", f"Attention num_heads = {_v}",
         lambda c, v=_v: (c.edit((c.ops[c.ATT]["num_heads"], v)), ["num_heads", c.opname(c.ATT)]))

# Op indices out of range, or referring to values not yet computed.
_IDX = {"neg2": -2, "neg2p31": -2 ** 31, "2p31m1": I32_MAX}
for _k, _v in _IDX.items():
    for _f in ("in0", "in1", "out"):
        case(f"linear_{_f}_{_k}", f"Linear {_f} = {_v}",
             lambda c, f=_f, v=_v: (c.edit((c.ops[c.QKV][f], v)), [c.opname(c.QKV)]))
for _f in ("in0", "in1", "out"):
    case(f"linear_{_f}_value_count", f"Linear {_f} = the value count (one past the end)",
         lambda c, f=_f: (c.edit((c.ops[c.QKV][f], c.nvalues)), [c.opname(c.QKV)]))
case("linear_out_neg1", "Linear without an output (out = -1)",
     lambda c: (c.edit((c.ops[c.QKV]["out"], -1)), [c.opname(c.QKV)]))
case("linear_in0_not_yet_computed", "Linear input computed by a later op",
     lambda c: (c.edit((c.ops[c.QKV]["in0"], c.ops[c.FFN]["out"].value)), [c.opname(c.QKV)]))
case("linear_in0_own_output", "Linear reading its own output",
     lambda c: (c.edit((c.ops[c.QKV]["in0"], c.ops[c.QKV]["out"].value)), [c.opname(c.QKV)]))
case("residual_not_yet_computed", "Linear residual computed by a later op",
     lambda c: (c.edit((c.ops[c.RES]["in1"], c.ops[c.FFN]["out"].value)), [c.opname(c.RES)]))
case("out_computed_twice", "two ops write the same value",
     lambda c: (c.edit((c.ops[c.RES]["out"], c.ops[c.QKV]["out"].value)),
                [c.opname(c.RES), "twice"]))
case("embedding_in0_set", "Embedding op with in0 set",
     lambda c: (c.edit((c.ops[c.EMB]["in0"], 0)), [c.opname(c.EMB)]))
case("embedding_in1_set", "Embedding op with in1 set",
     lambda c: (c.edit((c.ops[c.EMB]["in1"], 0)), [c.opname(c.EMB)]))
case("embedding_in0_out_of_range", "Embedding op with in0 = 2^31-1",
     lambda c: (c.edit((c.ops[c.EMB]["in0"], I32_MAX)), [c.opname(c.EMB)]))
case("attention_in1_set", "Attention op with in1 set",
     lambda c: (c.edit((c.ops[c.ATT]["in1"], 0)), [c.opname(c.ATT)]))
case("layernorm_in1_not_yet_computed", "LayerNorm residual computed by a later op",
     lambda c: (c.edit((c.ops[c.LN]["in1"], c.nvalues - 1)), [c.opname(c.LN)]))
for _k, _v in (("neg1", -1), ("value_count", None), ("2p31m1", I32_MAX), ("neg2p31", -2 ** 31)):
    case(f"graph_output_{_k}", f"graph output = {_v if _v is not None else 'value count'}",
         lambda c, v=_v: (c.edit((c.graph["output"], c.nvalues if v is None else v)), ["output"]))
case("graph_output_wrong_width", "graph output is the fused qkv value (3x hidden)",
     lambda c: (c.edit((c.graph["output"], c.ops[c.QKV]["out"].value)), ["output"]))

# Weight ids.
for _k, _v in (("tensor_count", None), ("2p31m1", I32_MAX), ("neg2", -2), ("neg2p31", -2 ** 31)):
    _desc = "the tensor count" if _v is None else _v
    case(f"linear_weight_id_{_k}", f"Linear weight id = {_desc}",
         lambda c, v=_v: (c.edit((c.ops[c.QKV]["w"][0], c.ntensors if v is None else v)),
                          [c.opname(c.QKV)]))
    case(f"linear_bias_id_{_k}", f"Linear bias id = {_desc}",
         lambda c, v=_v: (c.edit((c.ops[c.QKV]["w"][1], c.ntensors if v is None else v)),
                          [c.opname(c.QKV)]))
case("linear_unused_slot_set", "Linear with weight slot 4 (unused by Linear) set",
     lambda c: (F.set_op_slots(c.good, c.QKV, [w.value for w in c.ops[c.QKV]["w"][:3]]
                               + [-1] * (4 - min(3, len(c.ops[c.QKV]["w"]))) + [0]),
                [c.opname(c.QKV), "slot 4"]))
case("linear_f32_input_scale", "f32 Linear with an input scale (slot 3; only INT8 Linears have one)",
     lambda c: (F.set_op_slots(c.good, c.QKV, [w.value for w in c.ops[c.QKV]["w"][:3]]
                               + [-1] * (3 - min(3, len(c.ops[c.QKV]["w"]))) + [0]),
                [c.opname(c.QKV), "input scale"]))
case("linear_weight_is_bias", "Linear weight id pointing at its bias (wrong shape)",
     lambda c: (c.edit((c.ops[c.QKV]["w"][0], c.ops[c.QKV]["w"][1].value)), [c.opname(c.QKV)]))
case("embedding_word_missing", "Embedding without its word table (-1)",
     lambda c: (c.edit((c.ops[c.EMB]["w"][0], -1)), [c.opname(c.EMB)]))
case("embedding_position_out_of_range", "Embedding position table id = tensor count",
     lambda c: (c.edit((c.ops[c.EMB]["w"][1], c.ntensors)), [c.opname(c.EMB)]))
case("layernorm_beta_out_of_range", "LayerNorm beta id = 2^31-1",
     lambda c: (c.edit((c.ops[c.LN]["w"][1], I32_MAX)), [c.opname(c.LN)]))
case("attention_weight_slot_set", "Attention with a weight (it takes none)",
     lambda c: (F.set_op_slots(c.good, c.ATT, [0]), [c.opname(c.ATT)]))

# Tensor table entries: offsets negative/huge/unaligned/overlapping, sizes, dtypes.
_E = 5  # an entry in the middle of the table with a predecessor


def _tensor_case(name, what, fn):
    """fn(c, e, prev) -> list of (field, value); the message must name the tensor."""
    case(name, what, lambda c: (c.edit(*fn(c, c.tensor(_E), c.tensor(_E - 1))),
                                [c.tensor(_E).name.text]))


_tensor_case("tensor_offset_plus1", "blob offset not 64-byte aligned (+1)",
             lambda c, e, p: [(e.offset, e.offset.value + 1)])
_tensor_case("tensor_offset_plus32", "blob offset not 64-byte aligned (+32)",
             lambda c, e, p: [(e.offset, e.offset.value + 32)])
_tensor_case("tensor_offset_neg1", "blob offset -1 (as u64)", lambda c, e, p: [(e.offset, -1)])
_tensor_case("tensor_offset_neg64", "blob offset -64 (aligned, wraps with nbytes)",
             lambda c, e, p: [(e.offset, -64)])
_tensor_case("tensor_offset_2p63", "blob offset 2^63", lambda c, e, p: [(e.offset, 2 ** 63)])
_tensor_case("tensor_offset_data_end", "blob starts at the end of the data section",
             lambda c, e, p: [(e.offset, c.h["sizes"][F.DATA] // 64 * 64)])
_tensor_case("tensor_offset_past_data", "blob past the data section",
             lambda c, e, p: [(e.offset, (c.h["sizes"][F.DATA] + 4096) // 64 * 64)])
_tensor_case("tensor_overlaps_previous", "blob at the previous blob's offset",
             lambda c, e, p: [(e.offset, p.offset.value)])
_tensor_case("tensor_nbytes_plus1", "nbytes one more than the shape needs",
             lambda c, e, p: [(e.nbytes, e.nbytes.value + 1)])
_tensor_case("tensor_nbytes_neg1", "nbytes 2^64-1", lambda c, e, p: [(e.nbytes, -1)])
_tensor_case("tensor_nbytes_zero", "nbytes 0", lambda c, e, p: [(e.nbytes, 0)])
for _k, _v in (("0", 0), ("6", 6), ("2p32m1", U32 - 1)):
    _tensor_case(f"tensor_dtype_{_k}", f"dtype code {_v}", lambda c, e, p, v=_v: [(e.dtype, v)])
case("tensor_dtype_s32_for_f32", "an f32 weight relabelled s32 (same byte size)",
     lambda c: (c.edit((c.tensor_of(c.QKV, 0).dtype, 3)), [c.tensor_of(c.QKV, 0).name.text]))
case("tensor_shape_transposed", "the qkv weight's shape transposed (same byte size)",
     lambda c: (c.edit((c.tensor_of(c.QKV, 0).shape[0], c.tensor_of(c.QKV, 0).shape[1].value),
                       (c.tensor_of(c.QKV, 0).shape[1], c.tensor_of(c.QKV, 0).shape[0].value)),
                [c.tensor_of(c.QKV, 0).name.text]))


def _aliased(c):
    """Every later blob pointed at the first blob's bytes."""
    pokes = [(e.offset, c.tensor(0).offset.value) for e in c.tensors[1:]]
    return c.edit(*pokes), [c.tensor(1).name.text]


case("tensors_all_aliased", "every blob at the first blob's offset", _aliased)

# Tokenizer: missing or duplicate specials, duplicate tokens, bad fields.
for _t in ("[CLS]", "[SEP]", "[UNK]"):
    _slug = _t.strip("[]").lower()
    case(f"tokenizer_{_slug}_absent", f"{_t} missing from the vocabulary (renamed)",
         lambda c, t=_t: (c.rename_token(c.token_id(t), t[:-2] + "X]"), [t]))
    case(f"tokenizer_{_slug}_duplicate", f"{_t} twice in the vocabulary",
         lambda c, t=_t: (c.rename_token(2000, t), [t]))


def _dup_plain(c):
    """An ordinary word listed twice (distinctive, so the needle cannot match by chance)."""
    i, tok = next((i, s.text) for i, s in enumerate(c.tok["vocab"])
                  if i > 3000 and len(s.text) >= 8 and s.text.isalpha())
    return c.rename_token(i + 1, tok), [tok]


case("tokenizer_plain_duplicate", "an ordinary token listed twice", _dup_plain)
case("tokenizer_cls_option_unknown", "the [CLS] option names a token not in the vocabulary",
     lambda c: (F.splice(c.good, c.tok["cls_token"].length.at, c.tok["cls_token"].end,
                         F.pack_str("[NOPE]")), ["[NOPE]"]))
case("tokenizer_bad_magic", "tokenizer section magic wrong",
     lambda c: (c.edit((c.tok["magic"], 0x12345678)), ["tokenizer"]))
case("tokenizer_version_2", "tokenizer section version 2",
     lambda c: (c.edit((c.tok["version"], 2)), ["tokenizer", "version"]))
case("tokenizer_flags_unknown", "tokenizer flags with an unknown bit",
     lambda c: (c.edit((c.tok["flags"], 0x80)), ["flags"]))
for _k, _v in (("zero", 0), ("neg1", -1)):
    case(f"tokenizer_max_chars_{_k}", f"max_input_chars_per_word = {_v}",
         lambda c, v=_v: (c.edit((c.tok["max_input_chars_per_word"], v)),
                          ["max_input_chars_per_word"]))
for _k, _v in (("neg1", -1), ("2p31m1", I32_MAX), ("vocab_count", None)):
    case(f"tokenizer_added_id_{_k}", f"added token id {_v if _v is not None else 'vocab count'}",
         lambda c, v=_v: (c.edit((c.tok["added"][1]["id"], c.tok["vocab_count"].value
                                  if v is None else v)),
                          [c.tok["added"][1]["content"].text]))
case("tokenizer_added_flags_unknown", "added token flags 0xFF",
     lambda c: (c.edit((c.tok["added"][0]["flags"], 0xFF)), ["flags"]))
case("tokenizer_added_empty", "an added token with empty content",
     lambda c: (F.splice(c.good, c.tok["added"][2]["content"].length.at,
                         c.tok["added"][2]["content"].end, F.pack_str("")), ["added token"]))


def _added_id_mismatch(c):
    """The added token [CLS] carrying [SEP]'s id: the vocabulary says otherwise."""
    a = next(a for a in c.tok["added"] if a["content"].text == c.tok["cls_token"].text)
    return c.edit((a["id"], c.token_id(c.tok["sep_token"].text))), [c.tok["cls_token"].text]


case("tokenizer_added_id_mismatch", "added token [CLS] with [SEP]'s id", _added_id_mismatch)

# Format 3: tagged records (op attributes, config fields), value rows, named outputs,
# the architecture and the tokenizer kind.


def _attr_truncated(c):
    """The graph section ends inside the last op's first attribute record."""
    i = len(c.ops) - 1
    op = c.ops[i]
    if not op["attrs"]:  # give it one first
        b = F.add_op_attr(c.good, i, "eps", F.F32, 1e-5)
        op = F.walk_graph(b)["ops"][i]
    else:
        b = c.good
    cut = op["attr_count"].at + 4 + 6
    return F.splice(b, cut, F.walk_graph(b)["end"], b""), [op["name"].text, "truncated"]


def _attr_retyped(c, tag, typ):
    rec = c.ops[c.LN]["attrs"][tag]
    return c.edit((rec.type, typ))


case("op_attr_unknown", "an Attention attribute 'rotary' this spinel does not know",
     lambda c: (F.add_op_attr(c.good, c.ATT, "rotary", F.BOOL, True),
                [c.opname(c.ATT), "rotary", "newer spinel"]))
case("op_attr_unknown_empty_tag", "an attribute with an empty tag",
     lambda c: (F.add_op_attr(c.good, c.ATT, "", F.I64, 1), [c.opname(c.ATT), "not known"]))
case("op_attr_duplicate", "the Attention scale given twice",
     lambda c: (F.add_op_attr(c.good, c.ATT, "scale", F.F32, 0.5), [c.opname(c.ATT), "scale", "twice"]))
case("op_attr_wrong_type", "a LayerNorm eps stored as i64",
     lambda c: (_attr_retyped(c, "eps", F.I64), [c.opname(c.LN), "eps", "expected f32"]))
case("op_attr_type_unknown", "a LayerNorm eps with type code 99",
     lambda c: (_attr_retyped(c, "eps", 99), [c.opname(c.LN), "type code 99"]))
case("op_attr_not_for_kind", "num_heads on a LayerNorm",
     lambda c: (F.add_op_attr(c.good, c.LN, "num_heads", F.I64, 2),
                [c.opname(c.LN), "num_heads", "does not apply"]))
case("op_attr_num_heads_2p40", "Attention num_heads 2^40 (past int32)",
     lambda c: (c.edit((c.ops[c.ATT]["num_heads"], 2 ** 40)), [c.opname(c.ATT), "num_heads"]))
case("op_attr_pool_unknown", "a pooling kind this spinel does not know",
     lambda c: (F.add_op_attr(c.good, c.QKV, "pool", F.STR, "max"), [c.opname(c.QKV), "pool"]))
# The converter stores every Linear's block sparsity (f32 layers too): overwrite it,
# or add it to a file that has none.
case("op_attr_block_sparsity_2", "block sparsity 2 on a Linear",
     lambda c: ((c.edit((c.ops[c.QKV]["block_sparsity"], 2.0)) if "block_sparsity" in c.ops[c.QKV]
                 else F.add_op_attr(c.good, c.QKV, "block_sparsity", F.F32, 2.0)),
                [c.opname(c.QKV), "block sparsity"]))
case("op_attr_act_on_layernorm", "an activation on a LayerNorm",
     lambda c: (F.add_op_attr(c.good, c.LN, "act", F.STR, "tanh"), [c.opname(c.LN), "act"]))
for _k, _v in _BIG32.items():
    case(f"op_attr_count_{_k}", f"LayerNorm attribute count {_v}",
         lambda c, v=_v: (c.edit((c.ops[c.LN]["attr_count"], v)), [c.opname(c.LN), "attribute"]))
case("op_attr_count_plus1", "LayerNorm attribute count one more (the next op misread)",
     lambda c: (c.edit((c.ops[c.LN]["attr_count"], c.ops[c.LN]["attr_count"].value + 1)),
                [c.opname(c.LN)]))
case("op_attr_truncated", "graph section ends inside an attribute record", _attr_truncated)
for _k, _v in (("6", 6), ("2p32m1", U32 - 1)):
    case(f"op_slot_count_{_k}", f"Embedding weight slot count {_v}",
         lambda c, v=_v: (c.edit((c.ops[c.EMB]["nslots"], v)), [c.opname(c.EMB), "weight slot"]))
case("value_rows_2", "a value with row kind 2",
     lambda c: (c.edit((c.graph["values"][0]["rows"], 2)), ["row kind"]))
case("value_rows_sequences", "the embedding output marked per-sequence",
     lambda c: (c.edit((c.graph["values"][c.ops[c.EMB]["out"].value]["rows"], 1)),
                [c.opname(c.EMB), "rows"]))
for _k, _v in _BIG32.items():
    case(f"named_output_count_{_k}", f"named output count {_v}",
         lambda c, v=_v: (c.edit((c.graph["output_count"], v)), ["output count"]))


def _named_output(c, name, value):
    b = bytearray(c.good)
    g = c.graph
    F.poke(b, g["output_count"], g["output_count"].value + 1)
    return F.splice(b, g["end"], g["end"], F.pack_str(name) + value.to_bytes(4, "little", signed=True))


case("named_output_token_rows", "a named output holding token rows",
     lambda c: (_named_output(c, "pooler_output", c.graph["output"].value), ["pooler_output", "row"]))
case("named_output_reserved", "a named output called last_hidden_state",
     lambda c: (_named_output(c, "last_hidden_state", c.graph["output"].value), ["reserved"]))
case("named_output_out_of_range", "a named output referring to value 2^31-1",
     lambda c: (_named_output(c, "pooled", I32_MAX), ["pooled", "refers to value"]))
case("config_field_unknown", "a config field 'rope_theta' this spinel does not know",
     lambda c: (F.add_config_field(c.good, "rope_theta", F.F32, 1e4), ["rope_theta", "newer spinel"]))
case("config_field_duplicate", "hidden_size given twice",
     lambda c: (F.add_config_field(c.good, "hidden_size", F.I64, 8), ["hidden_size", "twice"]))
case("config_field_missing", "the hidden_size record dropped",
     lambda c: (F.splice(c.edit((c.cfg["_count"], c.cfg["_count"].value - 1), reseal=False),
                         c.cfg["_records"]["hidden_size"].start, c.cfg["_records"]["hidden_size"].end,
                         b""), ["hidden_size", "missing"]))
case("config_field_wrong_type", "max_position stored as f32",
     lambda c: (c.edit((c.cfg["_records"]["max_position"].type, F.F32)), ["max_position", "type"]))
case("config_normalize_bool_2", "normalize stored as the byte 2",
     lambda c: (c.edit((c.cfg["normalize"], 2)), ["normalize"]))
case("config_architecture_roberta", "architecture 'roberta' (no family module)",
     lambda c: (F.splice(c.good, c.cfg["architecture"].length.at, c.cfg["architecture"].end,
                         F.pack_str("roberta")), ["roberta", "not supported", "supported: bert"]))
case("config_default_pool_unknown", "default pooling names an output the graph lacks",
     lambda c: (F.splice(c.good, c.cfg["default_pool"].length.at, c.cfg["default_pool"].end,
                         F.pack_str("pooler_output")), ["default pooling", "pooler_output"]))
case("tokenizer_kind_unknown", "tokenizer kind 'wordlevel' (not one spinel reads)",
     lambda c: (F.splice(c.good, c.tok["kind"].length.at, c.tok["kind"].end, F.pack_str("wordlevel")),
                ["kind 'wordlevel'", "supported: wordpiece"]))
case("tokenizer_kind_empty", "an empty tokenizer kind",
     lambda c: (F.splice(c.good, c.tok["kind"].length.at, c.tok["kind"].end, F.pack_str("")),
                ["tokenizer", "kind"]))
case("strlen_tokenizer_kind_2p32m1", "length of the tokenizer kind string = 2^32-1",
     lambda c: (c.edit((c.tok["kind"].length, U32 - 1)), ["tokenizer kind"]))
case("strlen_attr_tag_2p31", "length of an attribute tag = 2^31",
     lambda c: (c.edit((c.ops[c.LN]["attrs"]["eps"].tag.length, 2 ** 31)), [c.opname(c.LN)]))

# Checksums: metadata flips without resealing, weight flips.
case("meta_flip_config", "a flipped byte in the config (source text), not resealed",
     lambda c: (flip(c.good, c.cfg["source"].text_at), ["checksum mismatch"]))
case("meta_flip_tokenizer", "a flipped byte in a vocabulary token, not resealed",
     lambda c: (flip(c.good, c.tok["vocab"][2000].text_at), ["checksum mismatch"]))
case("meta_flip_graph_eps", "a flipped low bit of a LayerNorm eps, not resealed",
     lambda c: (flip(c.good, c.ops[c.LN]["eps"].at), ["checksum mismatch"]))
case("meta_flip_tensor_table", "a flipped byte in a tensor name, not resealed",
     lambda c: (flip(c.good, c.tensor(_E).name.text_at), ["checksum mismatch"]))
case("meta_flip_padding", "a flipped byte in the padding before the data section, not resealed",
     lambda c: (flip(c.good, c.h["offsets"][F.DATA] - 1), ["checksum mismatch"]))
case("meta_flip_header_reserved", "a flipped reserved header byte, not resealed",
     lambda c: (flip(c.good, 120), ["checksum mismatch"]))
case("meta_flip_checksum_field", "a flipped bit of meta_checksum itself",
     lambda c: (flip(c.good, F.CHECKSUM_AT + 3), ["checksum mismatch"]))
case("meta_header_size_unresealed", "config size +1 in the header, not resealed",
     lambda c: (c.header(lambda h: h["sizes"].__setitem__(F.CONFIG, h["sizes"][F.CONFIG] + 1),
                         reseal=False), ["checksum mismatch"]))


def _weight_flip(pick, where):
    def fn(c):
        e = pick(c)
        at = c.h["offsets"][F.DATA] + e.offset.value + where(e.nbytes.value)
        return flip(c.good, at, 0x10), ["checksum", e.name.text]
    return fn


case("weight_flip_first_byte", "first byte of the first blob flipped",
     _weight_flip(lambda c: c.tensor(0), lambda n: 0))
case("weight_flip_ffn_middle", "a byte in the middle of an FFN weight flipped",
     _weight_flip(lambda c: c.tensor_of(c.FFN, 0), lambda n: n // 2))
case("weight_flip_last_byte", "last byte of the last blob flipped",
     _weight_flip(lambda c: c.tensors[-1], lambda n: n - 1))
case("weight_checksum_field_resealed", "a blob's checksum field changed (metadata resealed)",
     lambda c: (c.edit((c.tensor(_E).checksum, c.tensor(_E).checksum.value ^ 1)),
                ["checksum", c.tensor(_E).name.text]))


# ---- paths that are not model files -----------------------------------------------------------

def _mk_fifo(out, rel):
    p = out / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(p)
    return rel


def _mk_dir(out, rel):
    (out / rel).mkdir(parents=True)
    return rel


def _mk_symlink_to_fifo(out, rel):
    _mk_fifo(out, rel + ".fifo")
    os.symlink(Path(rel).name + ".fifo", out / rel)
    return rel


# (name, what, make(outdir) -> the path to give spinel, relative to outdir or absolute).
# The message must name the path.
PATH_CASES = [
    ("fifo", "the model path is a FIFO (must not block)", lambda o: _mk_fifo(o, "paths/model.fifo")),
    ("symlink_to_fifo", "the model path is a symlink to a FIFO",
     lambda o: _mk_symlink_to_fifo(o, "paths/link_to_fifo")),
    ("directory", "the model path is a directory", lambda o: _mk_dir(o, "paths/model_dir")),
    ("dev_null", "the model path is /dev/null", lambda o: "/dev/null"),
    ("dev_zero", "the model path is /dev/zero", lambda o: "/dev/zero"),
    ("missing", "the model path does not exist", lambda o: "paths/does_not_exist.bin"),
]


# ---- ONNX cases -----------------------------------------------------------------------

def _onnx():
    import onnx  # imported late: the .spnl cases need only xxhash
    return onnx


def _load(src_dir):
    return _onnx().load(str(src_dir / "model.onnx"))


def _node(m, suffix):
    return next(n for n in m.graph.node if n.name.endswith(suffix))


def _init(m, name):
    return next(t for t in m.graph.initializer if t.name == name)


def _set_init(m, name, arr):
    from onnx import numpy_helper
    t = _init(m, name)
    t.CopyFrom(numpy_helper.from_array(arr.astype("float32"), name))


def _array(m, name):
    from onnx import numpy_helper
    return numpy_helper.to_array(_init(m, name))


def _save(m, case_dir, external=False):
    onnx = _onnx()
    path = case_dir / "model.onnx"
    if external:
        onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data", size_threshold=1024)
    else:
        onnx.save(m, str(path))
    return path


WORD = "bert.embeddings.word_embeddings.weight"


def _edit_external(case_dir, tensor, location=None, dims=None, offset=None, length=None):
    """Rewrites one external initializer's reference (in the saved model.onnx)."""
    onnx = _onnx()
    path = case_dir / "model.onnx"
    m = onnx.load(str(path), load_external_data=False)
    t = _init(m, tensor)
    assert t.data_location == onnx.TensorProto.EXTERNAL
    kv = {e.key: e.value for e in t.external_data}
    if location is not None:
        kv["location"] = location
    if offset is not None:
        kv["offset"] = str(offset)
    if length is not None:
        kv["length"] = str(length)
    del t.external_data[:]
    for k, v in kv.items():
        t.external_data.add(key=k, value=v)
    if dims is not None:
        del t.dims[:]
        t.dims.extend(dims)
    onnx.save(m, str(path))


def oc_cycle(src, d):
    """The first embedding Add reads the embedding LayerNorm's output, which depends on it."""
    m = _load(src)
    add = _node(m, "/embeddings/Add")
    ln = next(n for n in m.graph.node if n.op_type == "LayerNormalization")
    add.input[0] = ln.output[0]
    _save(m, d)
    return [["cycle", "no earlier node", "topolog", ln.output[0]]]


def oc_self_loop(src, d):
    m = _load(src)
    add = _node(m, "/embeddings/Add")
    add.input[0] = add.output[0]
    _save(m, d)
    return [["cycle", "no earlier node", "topolog", add.output[0]]]


def oc_missing_initializer(src, d):
    m = _load(src)
    name = "bert.embeddings.LayerNorm.weight"
    m.graph.initializer.remove(_init(m, name))
    _save(m, d)
    return [name]


def oc_position_width(src, d):
    """Position table 32 wide, word table 64: the embeddings contradict each other."""
    m = _load(src)
    name = "bert.embeddings.position_embeddings.weight"
    _set_init(m, name, _array(m, name)[:, :32])
    _save(m, d)
    return ["position", "width"]


def oc_ffn_chain(src, d):
    """Intermediate weight narrowed to 96 columns, the output weight still has 128 rows."""
    m = _load(src)
    name = _node(m, "layer.0/intermediate/dense/MatMul").input[1]
    _set_init(m, name, _array(m, name)[:, :96])
    _save(m, d)
    return ["layer.0/intermediate/dense"]


def oc_ln_gamma_short(src, d):
    """A LayerNorm gamma of 32 entries in a model of hidden size 64."""
    m = _load(src)
    name = "bert.encoder.layer.0.attention.output.LayerNorm.weight"
    _set_init(m, name, _array(m, name)[:32])
    _save(m, d)
    return [name]


def oc_query_square_mismatch(src, d):
    """Query weight [64, 48]: Q, K and V disagree."""
    m = _load(src)
    name = _node(m, "layer.0/attention/self/query/MatMul").input[1]
    _set_init(m, name, _array(m, name)[:, :48])
    _save(m, d)
    return ["layer.0/attention/self/query"]


def _ext(location_fn):
    """The model saved with external data, the word table's location replaced by
    location_fn(case dir); the message must name the location and the tensor."""
    def fn(src, d):
        _save(_load(src), d, external=True)
        loc = location_fn(d)
        _edit_external(d, WORD, location=loc)
        return [loc, WORD]
    return fn


def _outside(d):
    shutil.copyfile(d / "model.onnx.data", d.parent / (d.name + "_outside.bin"))
    return d.parent / (d.name + "_outside.bin")


def _loc_symlink_file(d):
    os.symlink(os.path.relpath(_outside(d), d), d / "link.bin")
    return "link.bin"


def _loc_symlink_dir(d):
    other = d.parent / (d.name + "_elsewhere")
    other.mkdir()
    shutil.copyfile(d / "model.onnx.data", other / "w.bin")
    os.symlink(os.path.relpath(other, d), d / "sub")
    return "sub/w.bin"


def _loc_fifo(d):
    os.mkfifo(d / "w.fifo")
    return "w.fifo"


def _ext_dims(dims):
    def fn(src, d):
        _save(_load(src), d, external=True)
        _edit_external(d, WORD, dims=dims)
        return [WORD]
    return fn


def _ext_range(offset=None, length=None):
    def fn(src, d):
        _save(_load(src), d, external=True)
        _edit_external(d, WORD, offset=offset, length=length)
        return [WORD]
    return fn


def oc_inline_dims_overflow(src, d):
    """Inline raw_data, dims [2^62, 8]."""
    m = _load(src)
    t = _init(m, WORD)
    del t.dims[:]
    t.dims.extend([2 ** 62, 8])
    _save(m, d)
    return [WORD]


ONNX_CASES = [
    ("cycle", "a graph with a cycle (an Add reads a later LayerNorm)", oc_cycle),
    ("self_loop", "a node reading its own output", oc_self_loop),
    ("missing_initializer", "a LayerNorm weight initializer removed", oc_missing_initializer),
    ("position_width", "position table narrower than the word table", oc_position_width),
    ("ffn_chain_mismatch", "intermediate weight 64x96, output weight 128x64", oc_ffn_chain),
    ("ln_gamma_short", "a LayerNorm gamma of 32 in a hidden-64 model", oc_ln_gamma_short),
    ("query_width_mismatch", "query weight 64x48 while key/value are 64x64",
     oc_query_square_mismatch),
    ("ext_dotdot", "external data location '../x'",
     _ext(lambda d: "../" + _outside(d).name)),
    ("ext_dotdot_inside", "external data location 'sub/../../x'",
     _ext(lambda d: ((d / "sub").mkdir(), "sub/../../" + _outside(d).name)[1])),
    ("ext_absolute", "external data at an absolute path", _ext(lambda d: str(_outside(d).resolve()))),
    ("ext_symlink_file", "external data through a symlink to a file outside", _ext(_loc_symlink_file)),
    ("ext_symlink_dir", "external data through a symlinked folder outside", _ext(_loc_symlink_dir)),
    ("ext_fifo", "external data file is a FIFO (must not block)", _ext(_loc_fifo)),
    ("ext_directory", "external data location is a folder", _ext(lambda d: ((d / "sub").mkdir(),
                                                                        "sub")[1])),
    ("ext_dims_overflow", "external tensor dims [2^62, 8]: bytes overflow 2^64",
     _ext_dims([2 ** 62, 8])),
    ("ext_dims_wrap_zero", "external tensor dims [2^33, 2^31]: elements wrap to 0",
     _ext_dims([2 ** 33, 2 ** 31])),
    ("ext_dims_negative", "external tensor dims [-1, 64]", _ext_dims([-1, 64])),
    ("ext_offset_huge", "external data offset 2^63-1", _ext_range(offset=2 ** 63 - 1)),
    ("ext_length_huge", "external data length 2^63", _ext_range(length=2 ** 63)),
    ("ext_offset_20_digits", "external data offset 2^64-1 (does not fit)", _ext_range(offset=U64 - 1)),
    ("inline_dims_overflow", "inline tensor dims [2^62, 8]", oc_inline_dims_overflow),
]


# ---- convert's output path -------------------------------------------------------------------
# (name, what, make(outdir, case_rel) -> (argv tail after MODEL, details))

def snapshot(path):
    """What a path looks like, to compare after the run (never opens a FIFO)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return {"kind": "absent"}
    if stat.S_ISLNK(st.st_mode):
        return {"kind": "symlink", "target": os.readlink(path)}
    if stat.S_ISFIFO(st.st_mode):
        return {"kind": "fifo"}
    if stat.S_ISDIR(st.st_mode):
        return {"kind": "dir", "names": sorted(os.listdir(path))}
    if stat.S_ISREG(st.st_mode):
        return {"kind": "file", "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    return {"kind": "other", "mode": st.st_mode}


def _copy_model(src, d):
    d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "model.onnx", d / "model.onnx")
    shutil.copyfile(src / "tokenizer.json", d / "tokenizer.json")


def _out_same(o):
    return lambda d: {"o": o}


def _out_dot_path(d):
    (d / "x").mkdir()
    return {"o": "./x/../model.onnx"}


def _out_hardlink(d):
    os.link(d / "model.onnx", d / "hard.spnl")
    return {"o": "hard.spnl"}


def _out_symlink_to_input(d):
    os.symlink("model.onnx", d / "link.spnl")
    return {"o": "link.spnl"}


def _out_fifo(d):
    os.mkfifo(d / "out.fifo")
    return {"o": "out.fifo"}


def _out_dir(d):
    (d / "out_dir").mkdir()
    return {"o": "out_dir"}


def _out_symlink_to_victim(d):
    (d / "victim.txt").write_text("victim\n")
    os.symlink("victim.txt", d / "m.spnl")
    return {"o": "m.spnl", "unchanged": ["victim.txt"]}


def _out_dangling_symlink(d):
    os.symlink("nowhere/created.spnl", d / "m.spnl")
    return {"o": "m.spnl", "absent": ["nowhere"]}


def _out_missing_folder(d):
    return {"o": "no_such_dir/m.spnl", "absent": ["no_such_dir"]}


def _out_planted_tmp(d):
    """Symlinks at the names a naive writer would use for its temp file: the write must
    not follow them (the victim stays unchanged); the conversion itself may succeed."""
    (d / "victim.txt").write_text("victim\n")
    for n in ("m.spnl.tmp", ".m.spnl.tmp", "m.spnl.tmp.0", "m.spnl~"):
        os.symlink("victim.txt", d / n)
    return {"o": "m.spnl", "unchanged": ["victim.txt", "m.spnl.tmp", ".m.spnl.tmp"]}


# name, what, expected exit ("fail", 2 = usage error, "any"), make(case dir) -> dict:
# o = the -o path (relative to the case dir), unchanged / absent = more paths to check.
OUTPUT_CASES = [
    ("same_as_input", "-o is the input model.onnx", 2, _out_same("model.onnx")),
    ("same_as_input_dot_path", "-o is the input spelled ./x/../model.onnx", 2, _out_dot_path),
    ("hardlink_to_input", "-o is a hard link to the input", 2, _out_hardlink),
    ("same_as_tokenizer", "-o is the tokenizer file", 2, _out_same("tokenizer.json")),
    ("symlink_to_input", "-o is a symlink to the input", "fail", _out_symlink_to_input),
    ("fifo", "-o names an existing FIFO (must not block)", "fail", _out_fifo),
    ("directory", "-o names an existing directory", "fail", _out_dir),
    ("symlink_to_victim", "-o is a symlink to another file", "fail", _out_symlink_to_victim),
    ("dangling_symlink", "-o is a symlink to a file that does not exist", "fail",
     _out_dangling_symlink),
    ("missing_folder", "-o in a folder that does not exist", "fail", _out_missing_folder),
    ("planted_tmp_symlink", "symlinks planted at OUT.tmp and similar temp names", "any",
     _out_planted_tmp),
]


# ---- the corpus ---------------------------------------------------------------------------


def entry_ids():
    """Every manifest id, without building anything (for pytest's parametrize)."""
    ids = [f"spnl/{n}/{cmd}" for n, _, _ in SPNL_CASES for cmd in SPNL_COMMANDS]
    ids += [f"path/{n}/{cmd}" for n, _, _ in PATH_CASES for cmd in SPNL_COMMANDS + ("convert",)]
    ids += [f"onnx/{n}/convert" for n, _, _ in ONNX_CASES]
    ids += [f"output/{n}/convert" for n, *_ in OUTPUT_CASES]
    return ids


def _spnl_argv(cmd, rel):
    return ["inspect", rel] if cmd == "inspect" else ["run", rel, *RUN_ARGS]


def build_corpus(spnl, onnx_dir, out):
    """Writes the corpus into `out` (created; must be empty) and returns the manifest.
    Without onnx_dir only the .spnl and path cases are made."""
    spnl, out = Path(spnl), Path(out)
    onnx_dir = Path(onnx_dir) if onnx_dir else None
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    entries = []

    def add(id_, argv, what, expect, status="fail", timeout=120, stdout_empty=True, unchanged=(),
            absent=(), listings=(), may_create=()):
        argv = [str(a) for a in argv]
        entries.append(dict(id=id_, command=argv[0], file=argv[1], argv=argv, what=what,
                            expect=expect, exit=status, timeout=timeout, stdout_empty=stdout_empty,
                            unchanged={r: snapshot(out / r) for r in unchanged},
                            absent=list(absent),
                            listings={r: sorted(os.listdir(out / r)) for r in listings},
                            may_create=list(may_create)))

    # Damaged .spnl files.
    ctx = Ctx(spnl.read_bytes())
    (out / "spnl").mkdir()
    shutil.copyfile(spnl, out / "good.spnl")
    for name, what, fn in SPNL_CASES:
        data, needles = fn(ctx)
        rel = f"spnl/{name}.spnl"
        (out / rel).write_bytes(bytes(data))
        for cmd in SPNL_COMMANDS:
            add(f"spnl/{name}/{cmd}", _spnl_argv(cmd, rel), what, [rel] + needles)

    # Model paths that are not files; convert gets a fresh output folder each.
    tok = None
    if onnx_dir:
        src = out / "onnx_src"
        _copy_model(onnx_dir, src)
        tok = "onnx_src/tokenizer.json"
    for name, what, make in PATH_CASES:
        rel = make(out)
        fifo = "fifo" in name
        for cmd in SPNL_COMMANDS:
            add(f"path/{name}/{cmd}", _spnl_argv(cmd, rel), what, [rel],
                timeout=10 if fifo else 120)
        odir = f"paths/out_{name}"
        (out / odir).mkdir(parents=True)
        argv = ["convert", rel, "-o", f"{odir}/m.spnl"] + (["--tokenizer", tok] if tok else [])
        add(f"path/{name}/convert", argv, what, [rel], timeout=10 if fifo else 120,
            stdout_empty=False, absent=[f"{odir}/m.spnl"], listings=[odir],
            unchanged=[rel] if not rel.startswith("/") else [])

    if onnx_dir:
        for name, what, fn in ONNX_CASES:
            d = out / "onnx" / name
            d.mkdir(parents=True)
            needles = fn(onnx_dir, d)
            (d / "out").mkdir()
            rel = f"onnx/{name}"
            add(f"onnx/{name}/convert",
                ["convert", f"{rel}/model.onnx", "-o", f"{rel}/out/m.spnl", "--tokenizer", tok],
                what, ["model.onnx"] + needles, timeout=10 if "fifo" in name else 120,
                stdout_empty=False, absent=[f"{rel}/out/m.spnl"], listings=[f"{rel}/out", rel],
                unchanged=[f"{rel}/model.onnx"])

        for name, what, status, make in OUTPUT_CASES:
            d = out / "output" / name
            _copy_model(onnx_dir, d)
            how = make(d)
            rel, o = f"output/{name}", how["o"]
            existed = os.path.lexists(d / o)
            keep = ["model.onnx", "tokenizer.json"] + how.get("unchanged", [])
            keep += [o] if existed else []
            absent = how.get("absent", []) + ([] if existed or status == "any" else [o])
            add(f"{rel}/convert",
                ["convert", f"{rel}/model.onnx", "-o", f"{rel}/{o}", "--tokenizer",
                 f"{rel}/tokenizer.json"],
                what, [] if status == "any" else [o.split("/")[-1]], status=status,
                timeout=10 if name == "fifo" else 120, stdout_empty=False,
                unchanged=[f"{rel}/{k}" for k in keep], absent=[f"{rel}/{a}" for a in absent],
                listings=[rel], may_create=[o] if status == "any" else [])

    manifest = {"spnl": str(spnl), "onnx_dir": str(onnx_dir) if onnx_dir else None,
                "entries": entries}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spnl", required=True, help="a valid .spnl (converted from --onnx-dir)")
    ap.add_argument("--onnx-dir", help="folder with model.onnx and tokenizer.json")
    ap.add_argument("-o", "--output", required=True, help="empty or new folder for the corpus")
    a = ap.parse_args(argv)
    m = build_corpus(a.spnl, a.onnx_dir, a.output)
    print(f"{len(m['entries'])} entries in {Path(a.output) / 'manifest.json'}")


if __name__ == "__main__":
    main()

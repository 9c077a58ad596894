#!/usr/bin/env python3
"""Rewrites a format-2 .spnl as format 3, keeping its weights byte for byte, e.g.

  .venv/bin/python tests/fuzz/spnl_v2_to_v3.py old.spnl -o new.spnl

Only for test files whose point is in their weights (the reproducers in
regressions/fuzz_spnl hold a NaN or Inf that a converter would refuse to write).
Users convert their ONNX model again; spinel itself reads format 3 only.
"""
import argparse
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hostile"))
import spnl_format as F  # noqa: E402

ACTS = ["none", "gelu_erf", "gelu_tanh"]
PRECISIONS = ["f32", "s8-dense", "s8-sparse"]


class R:
    def __init__(self, b):
        self.b, self.p = b, 0

    def get(self, fmt):
        (v,) = struct.unpack_from(fmt, self.b, self.p)
        self.p += struct.calcsize(fmt)
        return v

    def str(self):
        n = self.get("<I")
        s = self.b[self.p:self.p + n].decode()
        self.p += n
        return s


def config_v3(sec):
    r = R(sec)
    arch = r.str()
    ints = [r.get("<q") for _ in F.CONFIG_INTS]
    eps, act, source = r.get("<f"), r.get("<I"), r.str()
    assert r.p == len(sec)
    recs = [F.record("architecture", F.STR, arch)]
    recs += [F.record(k, F.I64, v) for k, v in zip(F.CONFIG_INTS, ints)]
    recs += [F.record("layer_norm_eps", F.F32, eps), F.record("hidden_act", F.STR, ACTS[act]),
             F.record("source", F.STR, source), F.record("default_pool", F.STR, "mean"),
             F.record("normalize", F.BOOL, False)]
    return struct.pack("<I", len(recs)) + b"".join(recs)


def graph_v3(sec):
    r = R(sec)
    out = bytearray()
    nv = r.get("<I")
    out += struct.pack("<I", nv)
    for _ in range(nv):
        name, width = r.str(), r.get("<q")
        out += F.pack_str(name) + struct.pack("<qI", width, 0)  # token rows
    nops = r.get("<I")
    out += struct.pack("<I", nops)
    for _ in range(nops):
        kind, name = r.get("<I"), r.str()
        ins = [r.get("<i") for _ in range(3)]
        w = [r.get("<i") for _ in range(5)]
        act, prec, act_scale, act_zp, heads, eps, scale = (
            r.get("<I"), r.get("<I"), r.get("<f"), r.get("<i"), r.get("<i"), r.get("<f"), r.get("<f"))
        while w and w[-1] == -1:
            w.pop()
        # Non-default attributes, in the order of runtime/spnl.cpp's table.
        attrs = []
        if act:
            attrs.append(F.record("act", F.STR, ACTS[act]))
        if prec:
            attrs.append(F.record("precision", F.STR, PRECISIONS[prec]))
        if act_scale != 0:
            attrs.append(F.record("act_scale", F.F32, act_scale))
        if act_zp:
            attrs.append(F.record("act_zp", F.I64, act_zp))
        if heads:
            attrs.append(F.record("num_heads", F.I64, heads))
        if eps != 0:
            attrs.append(F.record("eps", F.F32, eps))
        if scale != 0:
            attrs.append(F.record("scale", F.F32, scale))
        out += struct.pack("<I", kind) + F.pack_str(name) + struct.pack("<3i", *ins)
        out += struct.pack("<I", len(w)) + b"".join(struct.pack("<i", v) for v in w)
        out += struct.pack("<I", len(attrs)) + b"".join(attrs)
    out += struct.pack("<iI", r.get("<i"), 0)  # output, no named outputs
    assert r.p == len(sec)
    return bytes(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spnl")
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    b = open(a.spnl, "rb").read()
    h = F.read_header(b)
    if h["version"] != 2:
        raise SystemExit(f"{a.spnl}: format {h['version']}, not 2")
    secs = [F.section_bytes(b, s) for s in range(F.DATA)]
    secs[F.CONFIG] = config_v3(secs[F.CONFIG])
    secs[F.TOKENIZER] = F.pack_str("wordpiece") + secs[F.TOKENIZER]
    secs[F.GRAPH] = graph_v3(secs[F.GRAPH])
    out = F.assemble(secs, F.section_bytes(b, F.DATA))
    F.check_layout(out)
    open(a.output, "wb").write(bytes(out))


if __name__ == "__main__":
    main()

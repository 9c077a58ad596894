"""A test-only DNABERT-2-architecture model and its ONNX export.

NOT the project's DNABERT-2 tooling (that is tools/dnabert2/, written
separately): this is a minimal stand-in so that the model module
(models/dnabert2/) has exports to be tested on before, and independently of,
that work. It follows DNABERT-2's bert_layers.py as a traceable forward:
word + token-type embeddings and LayerNorm (no position embeddings), a fused
Wqkv (Q|K|V, head-major, with bias) split into heads, the ALiBi bias built
from arange(seq) and the per-head slopes plus the additive mask, softmax
attention, dense + residual + LayerNorm, gated_layers (no bias) -> GELU(first
half) * second half -> wo + residual + LayerNorm; optionally the pooler
(dense + tanh on [CLS]) and a classifier -> "logits".

  python dnabert2_test_export.py --out DIR --layers 2 --hidden 96 --heads 6 \
      --intermediate 160 --vocab 300 [--classes 3] [--seed 1] [--opset 14]
      [--sparsity 0.8] [--alibi-form range|buffer] [--wrong-slope] [--asymmetric]

writes DIR/model.onnx and DIR/config.json. --alibi-form buffer slices a
precomputed [1, heads, 512, 512] constant (the original code's cache); the
last three options make deliberately wrong exports for the rejection tests.
"""

import argparse
import json
import math
import pathlib

import torch
from torch import nn


def alibi_slopes(n):
    def pow2(m):
        start = 2 ** (-(2 ** -(math.log2(m) - 3)))
        return [start * start**i for i in range(m)]

    if math.log2(n).is_integer():
        return pow2(n)
    c = 2 ** math.floor(math.log2(n))
    return pow2(c) + alibi_slopes(2 * c)[0::2][: n - c]


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        H, I = cfg.hidden, cfg.intermediate
        self.heads, self.hd = cfg.heads, H // cfg.heads
        self.Wqkv = nn.Linear(H, 3 * H)
        self.dense = nn.Linear(H, H)
        self.ln1 = nn.LayerNorm(H, eps=1e-12)
        self.gated_layers = nn.Linear(H, 2 * I, bias=False)
        self.wo = nn.Linear(I, H)
        self.ln2 = nn.LayerNorm(H, eps=1e-12)
        self.I = I

    def forward(self, h, bias):
        B, L, H = h.shape
        qkv = self.Wqkv(h).view(B, L, 3, self.heads, self.hd)
        q = qkv[:, :, 0].permute(0, 2, 1, 3)
        k = qkv[:, :, 1].permute(0, 2, 3, 1)
        v = qkv[:, :, 2].permute(0, 2, 1, 3)
        scores = torch.matmul(q, k) / math.sqrt(self.hd) + bias
        ctx = torch.matmul(scores.softmax(-1), v).permute(0, 2, 1, 3).reshape(B, L, H)
        a = self.ln1(self.dense(ctx) + h)
        g = self.gated_layers(a)
        m = nn.functional.gelu(g[:, :, : self.I]) * g[:, :, self.I :]
        return self.ln2(self.wo(m) + a)


class Dnabert2(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden
        self.word = nn.Embedding(cfg.vocab, H)
        self.token_type = nn.Embedding(2, H)
        self.ln = nn.LayerNorm(H, eps=1e-12)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        s = torch.tensor(alibi_slopes(cfg.heads), dtype=torch.float32)
        if cfg.wrong_slope:
            s[-1] *= 1.5
        self.register_buffer("slopes", s, persistent=False)
        if cfg.alibi_form == "buffer":
            pos = torch.arange(512)
            rel = (pos[None, :] - pos[:, None]).abs()
            self.register_buffer("alibi", (-s[:, None, None] * rel[None])[None], persistent=False)
        self.pooler = nn.Linear(H, H) if cfg.classes else None
        self.classifier = nn.Linear(H, cfg.classes) if cfg.classes else None

    def forward(self, input_ids, attention_mask, token_type_ids):
        L = input_ids.shape[1]
        h = self.ln(self.word(input_ids) + self.token_type(token_type_ids))
        mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * -10000.0
        if self.cfg.alibi_form == "buffer":
            alibi = self.alibi[:, :, :L, :L]
        else:
            pos = torch.arange(L)
            rel = pos[None, :] - pos[:, None]
            rel = rel if self.cfg.asymmetric else rel.abs()
            alibi = (-self.slopes[:, None, None] * rel[None].to(torch.float32))[None]
        bias = mask + alibi
        for layer in self.layers:
            h = layer(h, bias)
        if self.classifier is None:
            return h
        pooled = torch.tanh(self.pooler(h[:, 0]))
        return h, pooled, self.classifier(pooled)


def block_prune(model, sparsity, gen):
    """Zero whole 4x1 blocks (4 consecutive output channels x 1 input) of every Linear."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and m.out_features % 4 == 0:
                W = m.weight  # [out, in]
                blocks = W.view(W.shape[0] // 4, 4, W.shape[1])
                keep = torch.rand(blocks.shape[0], 1, blocks.shape[2], generator=gen) >= sparsity
                blocks.mul_(keep)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--intermediate", type=int, default=160)
    ap.add_argument("--vocab", type=int, default=300)
    ap.add_argument("--classes", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--opset", type=int, default=14)
    ap.add_argument("--sparsity", type=float, default=0.0)
    ap.add_argument("--alibi-form", choices=["range", "buffer"], default="range")
    ap.add_argument("--wrong-slope", action="store_true")
    ap.add_argument("--asymmetric", action="store_true")
    cfg = ap.parse_args()
    torch.manual_seed(cfg.seed)
    model = Dnabert2(cfg).eval()
    with torch.no_grad():  # weights big enough that every part matters
        for p in model.parameters():
            p.normal_(0, 0.5 if p.dim() == 1 else 1.0 / math.sqrt(p.shape[-1]))
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
    if cfg.sparsity > 0:
        block_prune(model, cfg.sparsity, torch.Generator().manual_seed(cfg.seed))
    out = pathlib.Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ids = torch.randint(5, cfg.vocab, (2, 11))
    mask = torch.ones(2, 11, dtype=torch.int64)
    tt = torch.zeros(2, 11, dtype=torch.int64)
    names = ["last_hidden_state"] + (["pooler_output", "logits"] if cfg.classes else [])
    dyn = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
           "token_type_ids": {0: "batch", 1: "seq"}, "last_hidden_state": {0: "batch", 1: "seq"}}
    for n in names[1:]:
        dyn[n] = {0: "batch"}
    torch.onnx.export(model, (ids, mask, tt), str(out / "model.onnx"), opset_version=cfg.opset,
                      input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=names,
                      dynamic_axes=dyn, do_constant_folding=True)
    (out / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": cfg.hidden,
        "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.intermediate, "vocab_size": cfg.vocab, "max_position_embeddings": 512,
        "alibi_starting_size": 512, "layer_norm_eps": 1e-12}, indent=1))


if __name__ == "__main__":
    main()

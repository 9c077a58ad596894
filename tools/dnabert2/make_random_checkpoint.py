#!/usr/bin/env python3
"""Write a random-weight DNABERT-2 folder (config.json + pytorch_model.bin or model.safetensors)
with the released checkpoint's parameter names and shapes.

The default is the 117M architecture (12 layers x 768, 12 heads, GEGLU 2 x 3072, vocab 4096) in
the form zhihan1996/DNABERT-2-117M ships: BertForMaskedLM names under "bert." plus the MLM head
"cls.predictions.*" (which inference ignores). --classifier N writes a
BertForSequenceClassification instead (bert.pooler.dense, classifier [N, hidden]).

Biases and LayerNorm parameters are random too, so that a conformance test notices a dropped
bias or a swapped LayerNorm.

Examples:
  make_random_checkpoint.py -o work/dnabert2/random-117m
  make_random_checkpoint.py --layers 2 --hidden 256 --heads 6 --intermediate 512 --classifier 3 \\
      --safetensors -o /tmp/small
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as dm  # noqa: E402


def randomise(m, seed, std=0.02):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "LayerNorm" in name or "layernorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
    return m


def make(layers=12, hidden=768, heads=12, intermediate=3072, vocab=4096, classifier=0, seed=0):
    cfg = dm.Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    intermediate_size=intermediate, num_labels=max(classifier, 2))
    return randomise(dm.Wrapper(cfg, classifier=classifier > 0), seed).eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--intermediate", type=int, default=3072, help="GEGLU width (gated_layers has twice this)")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--classifier", type=int, default=0, metavar="N", help="a sequence classifier with N labels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--safetensors", action="store_true", help="model.safetensors instead of pytorch_model.bin")
    ap.add_argument("-o", "--output", required=True, help="folder to write")
    args = ap.parse_args()
    m = make(args.layers, args.hidden, args.heads, args.intermediate, args.vocab, args.classifier, args.seed)
    dm.save_folder(m, args.output, mlm_head=args.classifier == 0, safetensors=args.safetensors)
    n = sum(p.numel() for p in m.parameters())
    print(f"wrote {args.output}: {args.layers} x {args.hidden}, {args.heads} heads, {n / 1e6:.1f}M parameters"
          + (f", classifier with {args.classifier} labels" if args.classifier else ""))


if __name__ == "__main__":
    main()

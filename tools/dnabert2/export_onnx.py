#!/usr/bin/env python3
"""Export a DNABERT-2 folder (the released checkpoint, a fine-tuned classifier, or one made by
make_random_checkpoint.py / train_task.py) to ONNX, and check ONNX Runtime against PyTorch.

DNABERT-2's own modelling code does not export (Triton attention, unpadding with nonzero/index
ops); tools/dnabert2/model.py computes the same function on padded tensors. The ONNX file has

  inputs   input_ids, attention_mask[, token_type_ids]   int64 [batch, sequence] (dynamic)
  outputs  last_hidden_state  float [batch, sequence, hidden], padded positions exactly 0
           logits             float [batch, labels]  (only for a classifier checkpoint)

ALiBi appears as the subgraph torch traces from arange(sequence): Range -> Unsqueeze -> Sub ->
Abs -> Cast -> Mul(-slopes) -> Add(mask), shared by every layer; the mask is
(1 - mask) * -10000. tokenizer.json (and the other tokenizer files) found in the folder, or
given with --tokenizer, are copied next to the ONNX file.

Examples:
  export_onnx.py path/to/DNABERT-2-117M -o dnabert2/model.onnx --opset 17
  export_onnx.py work/dnabert2/task-small --opset 14 -o /tmp/task14.onnx --two-inputs
"""

import argparse
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as dm  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def onnx_mode(model, two_inputs):
    """The model returning what the ONNX file outputs: last_hidden_state (, logits)."""
    model.onnx_outputs = True
    model.drop_token_types = two_inputs
    return model.eval()


def names(model, two_inputs):
    inputs = ["input_ids", "attention_mask"] + ([] if two_inputs else ["token_type_ids"])
    outputs = ["last_hidden_state"] + (["logits"] if model.is_classifier else [])
    return inputs, outputs


def sample_feed(vocab, lengths, seed, two_inputs, type_vocab=2):
    """A padded batch with the given real lengths (right padding, pad id 3 as DNABERT-2's [PAD])."""
    rng = np.random.default_rng(seed)
    s = max(lengths)
    ids = np.full((len(lengths), s), 3, dtype=np.int64)
    mask = np.zeros((len(lengths), s), dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, vocab, n)
        ids[i, 0] = 1  # [CLS]
        if n > 1:
            ids[i, n - 1] = 2  # [SEP]
        mask[i, :n] = 1
    feed = {"input_ids": ids, "attention_mask": mask}
    if not two_inputs:
        tt = np.zeros_like(ids)
        if type_vocab > 1:
            tt[:, s // 2:] = mask[:, s // 2:]  # some type-1 tokens so the table is exercised
        feed["token_type_ids"] = tt
    return feed


def export(model, path, opset, two_inputs=False):
    inputs, outputs = names(model, two_inputs)
    feed = sample_feed(model.config.vocab_size, [16, 11], 0, two_inputs)
    axes = {n: {0: "batch", 1: "sequence"} for n in inputs}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    if "logits" in outputs:
        axes["logits"] = {0: "batch"}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    wrapper = onnx_mode(model, two_inputs)
    with torch.no_grad():
        torch.onnx.export(wrapper, tuple(torch.from_numpy(feed[n]) for n in inputs), path,
                          opset_version=opset, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, do_constant_folding=True)
    return inputs, outputs


def check(model, path, two_inputs=False, cases=None, seed=1):
    """Runs ONNX Runtime and PyTorch on padded batches of mixed lengths; returns the largest
    absolute difference per output. Raises if padded positions are not exactly 0."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inputs, outputs = names(model, two_inputs)
    cases = cases or [[1], [7], [40, 3, 17], [128, 128], [5, 200, 64, 1]]
    worst = {n: 0.0 for n in outputs}
    for k, lengths in enumerate(cases):
        feed = sample_feed(model.config.vocab_size, lengths, seed + k, two_inputs, model.config.type_vocab_size)
        got = sess.run(outputs, {n: feed[n] for n in inputs})
        with torch.no_grad():
            ref = onnx_mode(model, two_inputs)(*(torch.from_numpy(feed[n]) for n in inputs))
        ref = ref if isinstance(ref, tuple) else (ref,)
        for n, g, r in zip(outputs, got, ref):
            worst[n] = max(worst[n], float(np.abs(g - r.numpy()).max()))
        pad = feed["attention_mask"] == 0
        if pad.any() and np.any(got[0][pad] != 0):
            raise SystemExit(f"error: {path}: padded positions of last_hidden_state are not exactly 0")
    return worst


def copy_tokenizer(src_dir, tokenizer, dst_dir):
    copied = []
    if tokenizer:
        shutil.copyfile(tokenizer, os.path.join(dst_dir, "tokenizer.json"))
        copied.append("tokenizer.json")
    elif src_dir:
        for f in TOKENIZER_FILES:
            p = os.path.join(src_dir, f)
            if os.path.exists(p) and os.path.abspath(p) != os.path.abspath(os.path.join(dst_dir, f)):
                shutil.copyfile(p, os.path.join(dst_dir, f))
                copied.append(f)
    return copied


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="DNABERT-2 folder: config.json + pytorch_model.bin or model.safetensors")
    ap.add_argument("-o", "--output", required=True, help="ONNX file to write")
    ap.add_argument("--opset", type=int, default=17, choices=[14, 17])
    ap.add_argument("--two-inputs", action="store_true", help="no token_type_ids input (all type 0)")
    ap.add_argument("--encoder-only", action="store_true",
                    help="for a classifier checkpoint: export last_hidden_state only")
    ap.add_argument("--tokenizer", help="tokenizer.json to copy next to the ONNX file")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="largest ORT vs PyTorch difference allowed")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    model = dm.load_folder(args.folder, classifier=False if args.encoder_only else None)
    c = model.config
    export(model, args.output, args.opset, args.two_inputs)
    copied = copy_tokenizer(args.folder, args.tokenizer, os.path.dirname(os.path.abspath(args.output)))
    dm.use_onednn(model)  # after the export: the traced graph keeps plain MatMuls
    worst = check(model, args.output, args.two_inputs)
    print(f"wrote {args.output}: opset {args.opset}, {c.num_hidden_layers} x {c.hidden_size}, "
          f"{c.num_attention_heads} heads, vocab {c.vocab_size}"
          + (f", classifier with {c.num_labels} labels" if model.is_classifier else "")
          + (f"; copied {', '.join(copied)}" if copied else ""))
    print("ONNX Runtime vs PyTorch, largest |diff|: " + ", ".join(f"{n} {d:.2e}" for n, d in worst.items()))
    if max(worst.values()) > args.tolerance:
        raise SystemExit(f"error: ONNX Runtime differs from PyTorch by more than {args.tolerance}")


if __name__ == "__main__":
    main()

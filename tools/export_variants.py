#!/usr/bin/env python3
"""The ONNX files users bring besides a plain torch.onnx.export, made locally
for the import-form tests (tests/conformance/test_import_forms.py).

  opset N      MiniLM (real weights) exported at opset N, 11..18
  fp16         opset-17 MiniLM through ONNX Runtime's float16 converter with
               keep_io_types=True: FLOAT16 initializers, f32 output behind a Cast
  fp16-io      the same with keep_io_types=False: fp16 everywhere, fp16 output;
               this is the shape of a torch `model.half()` export
  ort-opt      opset-14 MiniLM through onnxruntime.transformers.optimizer
               (model_type bert): com.microsoft.Attention, SkipLayerNormalization...
  qdyn         opset-14 MiniLM through onnxruntime.quantization.quantize_dynamic
  roberta      a small random RobertaModel export with its config.json beside it

Examples:
  export_variants.py opset --opset 12 -o work/edges-helper/opset12/model.onnx
  export_variants.py fp16 -o work/edges-helper/fp16/model.onnx

Why some forms are derived rather than exported directly:
  * torch 1.13 (Debian's, CPU-only) exports opsets up to 17, and onnx 1.12's
    version converter stops at 17 too. Opset 18 is made from the opset-17
    export by the one change 18 brings to these graphs: Reduce* axes become an
    input (upgrade_17_to_18; ops changed otherwise are refused). As the export
    has fused LayerNormalizations at 17, the embeddings' LayerNorm is first
    decomposed, so that the file also holds ReduceMean with its axes as an
    input: the form a decomposed LayerNorm takes from opset 18 on.
  * onnxruntime 1.19's optimizer and quantize_dynamic want onnx >= 1.14; the
    few names they use are shimmed onto onnx 1.12 (onnx_compat).
  * torch 1.13 cannot run `model.half()` on a CPU ("LayerNormKernelImpl" not
    implemented for 'Half'), so the fp16-io file stands in for that export;
    both have every float tensor, Constant and Cast target in FLOAT16.
"""

import argparse
import json
import os
import shutil
import subprocess
import importlib.util
import sys
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

import export_onnx  # noqa: E402

INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def onnx_compat():
    """onnxruntime 1.19's Python tools (transformers.optimizer, quantization)
    expect onnx >= 1.14; Debian's is 1.12, and a newer onnx wheel cannot be
    installed beside torch 1.13 (both register onnx-ml.proto in protobuf's
    descriptor pool: whichever is imported second gets the other's). The few
    names those tools touch are added here, for this script only."""
    from onnx import TensorProto, mapping

    for name, value in [("FLOAT8E4M3FN", 17), ("FLOAT8E4M3FNUZ", 18), ("FLOAT8E5M2", 19),
                        ("FLOAT8E5M2FNUZ", 20), ("UINT4", 21), ("INT4", 22)]:
        if not hasattr(TensorProto, name):
            setattr(TensorProto, name, value)
    if not hasattr(helper, "tensor_dtype_to_np_dtype"):
        helper.tensor_dtype_to_np_dtype = lambda t: mapping.TENSOR_TYPE_TO_NP_TYPE[t]
    if not hasattr(helper, "np_dtype_to_tensor_dtype"):
        helper.np_dtype_to_tensor_dtype = lambda d: mapping.NP_TYPE_TO_TENSOR_TYPE[np.dtype(d)]
    if importlib.util.find_spec("onnx.reference") is None:
        stub = types.ModuleType("onnx.reference")
        stub.ReferenceEvaluator = None  # imported by quant_utils, unused by quantize_dynamic
        sys.modules["onnx.reference"] = stub
        onnx.reference = stub


def export_minilm(opset, out):
    """tools/export_onnx.py's export, at any opset torch 1.13 knows (<= 17)."""
    import torch

    class A:
        random_config = None
        model = "minilm"
        gelu = "erf"
        seed = 0

    model, tok_dir = export_onnx.load_model(A)
    wrapper = export_onnx.Encoder(model, "min").eval()
    ids, mask, types_ = export_onnx.sample_inputs(model.config.vocab_size, batch=2, seq=8, seed=7)
    dyn = {0: "batch", 1: "seq"}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(wrapper, (ids, mask, types_), out, opset_version=opset, input_names=INPUTS,
                          output_names=["last_hidden_state"],
                          dynamic_axes={n: dyn for n in INPUTS + ["last_hidden_state"]},
                          do_constant_folding=True)
    copy_tokenizer(tok_dir, out)
    return model, wrapper


def copy_tokenizer(tok_dir, out, files=("tokenizer.json", "vocab.txt")):
    d = os.path.dirname(os.path.abspath(out))
    for f in files:
        s = os.path.join(tok_dir, f)
        if os.path.exists(s):
            shutil.copyfile(s, os.path.join(d, f))


def set_opset(model, version):
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = version


def upgrade_17_to_18(model):
    """What opset 18 changes in these graphs: the Reduce* ops (but ReduceSum,
    moved at 13) take their axes as an input instead of an attribute. Ops whose
    signature also changed at 18 (Split, Pad, Resize, ...) are refused."""
    g = model.graph
    moved = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
             "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}
    changed = {"Split", "Pad", "Resize", "ScatterND", "ScatterElements", "Col2Im", "GroupNormalization",
               "OptionalHasElement", "OptionalGetElement", "CenterCropPad", "BitwiseAnd"}
    for n in g.node:
        if n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type in changed:
            raise SystemExit(f"upgrade_17_to_18: {n.op_type} changed at opset 18; not handled")
        axes = [a for a in n.attribute if a.name == "axes"]
        if n.op_type in moved and axes:
            name = (n.name or n.output[0]) + "/axes"
            g.initializer.append(numpy_helper.from_array(np.array(axes[0].ints, dtype=np.int64), name))
            n.input.append(name)
            n.attribute.remove(axes[0])
    set_opset(model, 18)


def decompose_first_layernorm(model):
    """Replaces the first LayerNormalization (the embeddings') by the
    ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add chain torch emits below
    opset 17 (the version converter then moves its axes to an input)."""
    g = model.graph
    idx = next(i for i, n in enumerate(g.node) if n.op_type == "LayerNormalization")
    ln = g.node[idx]
    x, gamma, beta = ln.input[0], ln.input[1], ln.input[2]
    y = ln.output[0]
    eps = next((a.f for a in ln.attribute if a.name == "epsilon"), 1e-5)
    p = "emb_ln_decomposed/"
    inits = [numpy_helper.from_array(np.array(2.0, dtype=np.float32), p + "two"),
             numpy_helper.from_array(np.array(eps, dtype=np.float32), p + "eps")]
    g.initializer.extend(inits)
    nodes = [
        helper.make_node("ReduceMean", [x], [p + "mean"], name=p + "ReduceMean", axes=[-1], keepdims=1),
        helper.make_node("Sub", [x, p + "mean"], [p + "centered"], name=p + "Sub"),
        helper.make_node("Pow", [p + "centered", p + "two"], [p + "sq"], name=p + "Pow"),
        helper.make_node("ReduceMean", [p + "sq"], [p + "var"], name=p + "ReduceMean_1", axes=[-1],
                         keepdims=1),
        helper.make_node("Add", [p + "var", p + "eps"], [p + "var_eps"], name=p + "Add"),
        helper.make_node("Sqrt", [p + "var_eps"], [p + "std"], name=p + "Sqrt"),
        helper.make_node("Div", [p + "centered", p + "std"], [p + "norm"], name=p + "Div"),
        helper.make_node("Mul", [p + "norm", gamma], [p + "scaled"], name=p + "Mul"),
        helper.make_node("Add", [p + "scaled", beta], [y], name=p + "Add_1"),
    ]
    del g.node[idx]
    for k, n in enumerate(nodes):
        g.node.insert(idx + k, n)


def check_against_torch(path, wrapper, vocab, tol, output_dtype=np.float32):
    import onnxruntime as ort
    import torch
    ids, mask, types_ = export_onnx.sample_inputs(vocab, batch=2, seq=11, seed=123)
    with torch.no_grad():
        ref = wrapper(ids, mask, types_).numpy()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy(),
                          "token_type_ids": types_.numpy()})[0]
    assert got.dtype == output_dtype, got.dtype
    diff = float(np.max(np.abs(got.astype(np.float32) - ref)))
    print(f"max abs diff onnxruntime vs pytorch f32: {diff:.3e}")
    if diff > tol:
        sys.exit(f"error: ONNX Runtime disagrees with PyTorch (max abs diff {diff:.3e} > {tol})")


def cmd_opset(args):
    opset = args.opset
    if opset <= 17:
        model, wrapper = export_minilm(opset, args.output)
    else:
        model, wrapper = export_minilm(17, args.output)
        m = onnx.load(args.output)
        decompose_first_layernorm(m)
        upgrade_17_to_18(m)
        onnx.save(m, args.output)
    if opset <= 17:  # onnx 1.12's checker knows opsets up to 17; ONNX Runtime checks 18 below
        onnx.checker.check_model(onnx.load(args.output))
    print(f"wrote {args.output} (opset {opset})")
    check_against_torch(args.output, wrapper, model.config.vocab_size, 1e-4)


def fp16_convert(src, dst, keep_io_types):
    from onnxruntime.transformers.float16 import convert_float_to_float16
    m = onnx.load(src)
    m16 = convert_float_to_float16(m, keep_io_types=keep_io_types)
    onnx.save(m16, dst)


def cmd_fp16(args, keep_io_types):
    out = args.output
    tmp = out + ".f32.onnx"
    model, wrapper = export_minilm(17, tmp)
    fp16_convert(tmp, out, keep_io_types)
    os.remove(tmp)
    print(f"wrote {out} (float16, keep_io_types={keep_io_types})")
    # fp16 activations: ~1e-2 from the f32 model is expected.
    check_against_torch(out, wrapper, model.config.vocab_size, 0.1,
                        np.float32 if keep_io_types else np.float16)


def cmd_ort_opt(args):
    onnx_compat()
    from onnxruntime.transformers import optimizer
    tmp = args.output + ".f32.onnx"
    model, _ = export_minilm(14, tmp)
    opt = optimizer.optimize_model(tmp, model_type="bert", num_heads=model.config.num_attention_heads,
                                   hidden_size=model.config.hidden_size)
    opt.save_model_to_file(args.output)
    os.remove(tmp)
    ops = sorted({f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in opt.model.graph.node})
    print(f"wrote {args.output}: {ops}")


def cmd_qdyn(args):
    onnx_compat()
    from onnxruntime.quantization import QuantType, quantize_dynamic
    tmp = args.output + ".f32.onnx"
    export_minilm(14, tmp)
    quantize_dynamic(tmp, args.output, weight_type=QuantType.QInt8)
    os.remove(tmp)
    m = onnx.load(args.output)
    ops = sorted({n.op_type for n in m.graph.node})
    print(f"wrote {args.output}: {ops}")


def cmd_roberta(args):
    import torch
    from transformers import RobertaConfig, RobertaModel
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=130, type_vocab_size=1)
    cfg._attn_implementation = "eager"
    model = RobertaModel(cfg, add_pooling_layer=False).eval()
    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    ids = torch.randint(3, 1000, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.int64)
    dyn = {0: "batch", 1: "seq"}

    class Enc(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    with torch.no_grad():
        torch.onnx.export(Enc(model), (ids, mask), args.output, opset_version=14,
                          input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                          dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "last_hidden_state": dyn},
                          do_constant_folding=True)
    cfg.save_pretrained(out_dir)  # config.json with "model_type": "roberta"
    # A byte-level BPE tokenizer.json, as a RoBERTa checkpoint ships (tiny vocabulary).
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5, "ab": 6, "\u0120": 7}
    tok = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
           "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                             "use_regex": True},
           "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                              "trim_offsets": True, "add_prefix_space": False},
           "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                       "use_regex": True},
           "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                     "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                     "vocab": vocab, "merges": ["a b"]}}
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    print(f"wrote {args.output} with config.json (model_type {cfg.model_type}) and a BPE tokenizer.json")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("form", choices=["opset", "fp16", "fp16-io", "ort-opt", "qdyn", "roberta"])
    ap.add_argument("--opset", type=int, default=17, choices=range(11, 19), metavar="11..18")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    {"opset": cmd_opset, "fp16": lambda a: cmd_fp16(a, True), "fp16-io": lambda a: cmd_fp16(a, False),
     "ort-opt": cmd_ort_opt, "qdyn": cmd_qdyn, "roberta": cmd_roberta}[args.form](args)


if __name__ == "__main__":
    main()

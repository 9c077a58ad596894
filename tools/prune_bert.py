#!/usr/bin/env python3
"""Magnitude 4x1 block pruning of an HF BertModel encoder, exported to ONNX.

A 4x1 block is 4 consecutive OUTPUT channels x 1 input channel of a Linear
(HF model names call the same pattern "1x4"). In a torch Linear weight
[out, in] that is 4 consecutive rows at one column; in the exported ONNX MatMul
weight [in, out] = K x N it is 4 consecutive N entries in one K row -- the
layout spinel's block-sparse INT8 kernel packs.

What it does:
  1. loads the model (the bundled all-MiniLM-L6-v2, an HF model folder, or a
     randomly initialised bert-base / bert-large);
  2. scores every 4x1 block of every encoder Linear (attention query, key,
     value, attention.output.dense, intermediate.dense, output.dense) by its
     L2 norm and zeroes the lowest-scoring blocks:
       --scope per-layer  each Linear reaches --sparsity on its own (default);
       --scope global     one threshold over the blocks of all these Linears,
                          so single Linears end up above or below the target;
  3. optionally (--finetune-steps N) distils the pruned student towards the
     dense teacher's last_hidden_state (MSE over real tokens) with Adam on a
     generated, deterministic sentence corpus; the mask stays fixed (pruned
     weights get no gradient and are zeroed again after every step);
  4. prints the mean cosine between the student's and the teacher's mean-pooled
     embeddings on held-out sentences (before and after fine-tuning), and a
     table of the achieved block sparsity of every Linear;
  5. with -o: saves the pruned model as an HF folder (--save-hf DIR, or a
     temporary one), exports it with tools/export_onnx.py (tokenizer files are
     copied next to the ONNX file), and checks that every encoder MatMul
     initializer of the ONNX file holds exactly the intended zero 4x1 blocks
     (exit status 1 if not).

Examples:
  .venv/bin/python tools/prune_bert.py --model minilm --sparsity 0.8 -o work/pruned/model.onnx
  .venv/bin/python tools/prune_bert.py --model minilm --sparsity 0.8 --finetune-steps 200 \\
      -o work/pruned-ft/model.onnx --save-hf work/pruned-ft/hf
  .venv/bin/python tools/prune_bert.py --random-config bert-base --seed 1 --sparsity 0.9 \\
      --scope global -o work/bert-base-90/model.onnx
  build/spinel convert work/pruned/model.onnx -o pruned.spnl --quant int8 --sparse auto
"""

import argparse
import copy
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

# Never reach for a model hub: everything used here is local.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import export_onnx  # noqa: E402

BLOCK = 4  # output channels per block
LINEARS = [  # (short name, attribute path inside one BertLayer)
    ("query", "attention.self.query"),
    ("key", "attention.self.key"),
    ("value", "attention.self.value"),
    ("attn_out", "attention.output.dense"),
    ("inter", "intermediate.dense"),
    ("output", "output.dense"),
]
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


# ---- model and blocks --------------------------------------------------------------

def encoder_linears(model):
    """[(name, layer index, short name, nn.Linear)] for every encoder Linear, in graph order."""
    out = []
    for i, layer in enumerate(model.encoder.layer):
        for short, path in LINEARS:
            mod = layer
            for part in path.split("."):
                mod = getattr(mod, part)
            out.append((f"encoder.layer.{i}.{path}", i, short, mod))
    return out


def block_scores(weight):
    """torch weight [out, in] -> L2 norm of each 4x1 block, [out/4, in]."""
    out_f, in_f = weight.shape
    if out_f % BLOCK:
        raise SystemExit(f"error: a Linear with {out_f} output channels cannot be split into 4x1 blocks")
    return weight.detach().float().reshape(out_f // BLOCK, BLOCK, in_f).norm(dim=1)


def lowest_k_mask(scores, k):
    """Keep-mask (True = kept) that drops exactly the k lowest scores (ties broken by position)."""
    flat = scores.reshape(-1)
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if k > 0:
        # A stable sort makes the choice among equal scores deterministic.
        order = torch.from_numpy(np.argsort(flat.numpy(), kind="stable"))
        keep[order[:k]] = False
    return keep.reshape(scores.shape)


def compute_block_masks(linears, sparsity, scope):
    """name -> keep-mask [out/4, in] of 4x1 blocks."""
    scores = {name: block_scores(lin.weight) for name, _, _, lin in linears}
    if scope == "per-layer":
        return {name: lowest_k_mask(s, int(round(sparsity * s.numel()))) for name, s in scores.items()}
    # global: one ranking (i.e. one threshold) over every block of every Linear
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1) for n in names])
    keep = lowest_k_mask(flat, int(round(sparsity * flat.numel())))
    masks, at = {}, 0
    for n in names:
        cnt = scores[n].numel()
        masks[n] = keep[at:at + cnt].reshape(scores[n].shape)
        at += cnt
    return masks


def expand_mask(block_keep):
    """[out/4, in] block keep-mask -> [out, in] float element mask."""
    return block_keep.repeat_interleave(BLOCK, dim=0).float()


def apply_masks(linears, elem_masks):
    with torch.no_grad():
        for name, _, _, lin in linears:
            lin.weight.mul_(elem_masks[name])


def zero_block_mask_torch(weight):
    """[out, in] -> bool [out/4, in], True where the whole 4x1 block is zero."""
    out_f, in_f = weight.shape
    return (weight.detach().reshape(out_f // BLOCK, BLOCK, in_f) == 0).all(dim=1)


def sparsity_table(model, linears):
    """Prints the achieved block sparsity of every Linear; returns name -> sparsity."""
    shorts = [s for s, _ in LINEARS]
    per = {}
    rows = {}
    for name, i, short, lin in linears:
        z = zero_block_mask_torch(lin.weight)
        per[name] = float(z.float().mean())
        r = rows.setdefault(i, {"zero": 0, "total": 0})
        r[short] = per[name]
        r["zero"] += int(z.sum())
        r["total"] += z.numel()
    w = 9
    print("achieved 4x1 block sparsity (fraction of all-zero blocks):")
    print("layer " + "".join(f"{s:>{w}}" for s in shorts) + f"{'all':>{w}}")
    tz = tt = 0
    for i in sorted(rows):
        r = rows[i]
        tz += r["zero"]
        tt += r["total"]
        print(f"{i:>5} " + "".join(f"{r[s]:>{w}.4f}" for s in shorts) + f"{r['zero'] / r['total']:>{w}.4f}")
    print(f"total {tz} of {tt} blocks zero = {tz / tt:.4f}")
    return per


# ---- a generated corpus ------------------------------------------------------------

_SUBJECTS = ["the engineer", "a young girl", "my neighbour", "the old fisherman", "our team", "the committee",
             "a tired doctor", "the teacher", "two students", "the pilot", "a small dog", "the farmer",
             "her brother", "the orchestra", "a journalist", "the chef", "the children", "a stranger",
             "the government", "the robot", "my grandmother", "the startup", "a customer", "the nurse"]
_VERBS = ["repaired", "painted", "sold", "described", "found", "lost", "carried", "cooked", "studied",
          "designed", "cleaned", "photographed", "ignored", "discovered", "borrowed", "delivered",
          "measured", "tested", "wrote about", "argued over", "bought", "rebuilt", "inspected", "shared"]
_OBJECTS = ["the broken bicycle", "a wooden table", "an old map", "the quarterly report", "a red umbrella",
            "the garden fence", "a loaf of bread", "the ancient castle", "a new algorithm", "the river bridge",
            "a stack of letters", "the music festival", "a mountain trail", "the software release",
            "an electric car", "the village school", "a cup of tea", "the football match", "a rare stamp",
            "the hospital budget", "a paper airplane", "the solar panels", "a violin concerto", "the database"]
_PLACES = ["in the kitchen", "near the harbour", "at the station", "in a quiet village", "on the roof",
           "in the laboratory", "at the market", "under the bridge", "in Paris", "at the airport",
           "in the forest", "on the beach", "in a crowded office", "at the museum", "in the desert",
           "on the third floor", "behind the library", "in Tokyo", "at the stadium", "in the garage"]
_TIMES = ["yesterday", "last week", "this morning", "on Monday", "in 1998", "every summer", "at midnight",
          "after lunch", "before the storm", "during the holidays", "two years ago", "tonight", "in March",
          "at 7:30 pm", "on 12 October 2021", "once again"]
_ADJ = ["quiet", "expensive", "beautiful", "complicated", "dangerous", "cheap", "famous", "boring",
        "surprising", "enormous", "fragile", "modern", "strange", "delicious", "noisy", "efficient"]
_NOUNS = ["weather", "movie", "book", "restaurant", "city", "phone", "project", "concert", "hotel",
          "language", "recipe", "museum", "network", "garden", "train", "computer", "painting", "game"]
_TOPICS = ["machine learning", "climate change", "ancient history", "quantum physics", "football",
           "jazz music", "the stock market", "organic chemistry", "medieval architecture", "volcanoes",
           "sparse matrices", "protein folding", "renewable energy", "photography", "space travel",
           "cryptography", "marine biology", "tax law", "poetry", "cloud computing"]
_TEMPLATES = [
    "{S} {V} {O} {P} {T}.",
    "{S} {V} {O} {T}.",
    "{T}, {s} {V} {O} {P}.",
    "Why did {s} say that {O} was so {A}?",
    "The {N} {P} was surprisingly {A}.",
    "I think the {N} is {A}, but {s} disagrees.",
    "Can you tell me more about {Tp}?",
    "{S} has been reading about {Tp} {T}.",
    "There are {num} {N}s {P}, and most of them are {A}.",
    "It costs ${num}.{cents} to visit the {N} {P}.",
    "Is the {N} really {A}, or is it just {A2}?",
    "After {S2} {V2} {O2}, {s} {V} {O}.",
    "A short lecture on {Tp} was given {P} {T}.",
    "{S} never {V} {O}; {s2} did.",
    "Please remind {s} that the {N} opens {T}.",
    "The report about {Tp} is {A} and far too long.",
    "{num} people {V} {O} {P}.",
    "Nobody expected {s} to like {Tp} this much.",
]


def _cap(s):
    return s[0].upper() + s[1:]


def make_corpus(n, seed):
    """n distinct, deterministic English sentences from templates and word lists."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < n:
        t = rng.choice(_TEMPLATES)
        s1, s2 = rng.sample(_SUBJECTS, 2)
        a1, a2 = rng.sample(_ADJ, 2)
        text = t.format(S=_cap(s1), s=s1, S2=_cap(s2), s2=s2, V=rng.choice(_VERBS), V2=rng.choice(_VERBS),
                        O=rng.choice(_OBJECTS), O2=rng.choice(_OBJECTS), P=rng.choice(_PLACES),
                        T=rng.choice(_TIMES), A=a1, A2=a2, N=rng.choice(_NOUNS), Tp=rng.choice(_TOPICS),
                        num=rng.randint(2, 9999), cents=f"{rng.randint(0, 99):02d}")
        text = _cap(text)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


# ---- embeddings and fine-tuning ----------------------------------------------------

def _mm_t(a, b):
    """a [m, k] @ b[n, k]^T through oneDNN (Debian's torch uses a reference BLAS, ~30x slower)."""
    return torch._C._nn.mkldnn_linear(a.contiguous().to_mkldnn(), b.contiguous().to_mkldnn(), None).to_dense()


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2, w, b):
        ctx.save_for_backward(x2, w)
        y = _mm_t(x2, w)
        return y if b is None else y + b

    @staticmethod
    def backward(ctx, g):
        x2, w = ctx.saved_tensors
        g = g.contiguous()
        gx = _mm_t(g, w.t()) if ctx.needs_input_grad[0] else None
        gw = _mm_t(g.t(), x2.t()) if ctx.needs_input_grad[1] else None
        gb = g.sum(0) if ctx.needs_input_grad[2] else None
        return gx, gw, gb


def _onednn_linear_forward(self, x):
    y = _OneDnnLinear.apply(x.reshape(-1, x.shape[-1]), self.weight, self.bias)
    return y.reshape(*x.shape[:-1], y.shape[-1])


def use_onednn_linears(model):
    """Routes every nn.Linear of `model` through oneDNN (same math; only speed differs)."""
    if not torch.backends.mkldnn.is_available():
        return
    import types
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float32:
            m.forward = types.MethodType(_onednn_linear_forward, m)


def encode(tokenizer, texts, max_length):
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def mean_pooled(model, batch):
    h = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
              token_type_ids=batch["token_type_ids"]).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp(min=1)


@torch.no_grad()
def mean_cosine(student, teacher, tokenizer, texts, max_length, batch_size=32):
    cos = []
    for i in range(0, len(texts), batch_size):
        b = encode(tokenizer, texts[i:i + batch_size], max_length)
        cos.append(torch.nn.functional.cosine_similarity(mean_pooled(student, b), mean_pooled(teacher, b), dim=1))
    c = torch.cat(cos)
    return float(c.mean()), float(c.min())


def finetune(student, teacher, tokenizer, linears, elem_masks, args):
    """Distils student -> teacher (last_hidden_state MSE) with the block masks held fixed."""
    corpus = make_corpus(args.corpus_size, seed=args.seed + 1000)
    rng = random.Random(args.seed)
    # The embeddings stay as they are: the encoder adapts to the pruned weights.
    params = [p for n, p in student.named_parameters() if not n.startswith("embeddings.")]
    opt = torch.optim.Adam(params, lr=args.lr)
    student.train()
    # Dropout would make the distillation target noisy; keep the student deterministic.
    for m in student.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    t0 = time.time()
    order = []
    for step in range(1, args.finetune_steps + 1):
        if len(order) < args.batch_size:
            order = list(range(len(corpus)))
            rng.shuffle(order)
        idx, order = order[:args.batch_size], order[args.batch_size:]
        b = encode(tokenizer, [corpus[j] for j in idx], args.max_length)
        with torch.no_grad():
            t = teacher(**b).last_hidden_state
        s = student(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).to(s.dtype)
        loss = (((s - t) ** 2) * m).sum() / (m.sum() * s.shape[-1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for name, _, _, lin in linears:  # pruned weights get no update at all
            lin.weight.grad.mul_(elem_masks[name])
        opt.step()
        apply_masks(linears, elem_masks)
        if step == 1 or step % max(1, args.finetune_steps // 10) == 0 or step == args.finetune_steps:
            print(f"  step {step:>5}/{args.finetune_steps}  mse {loss.item():.3e}  ({time.time() - t0:.0f} s)",
                  flush=True)
    student.eval()


# ---- export and verification -------------------------------------------------------

def save_hf(model, tok_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)
    for f in TOKENIZER_FILES:
        s = os.path.join(tok_dir, f)
        if os.path.exists(s) and os.path.abspath(s) != os.path.abspath(os.path.join(out_dir, f)):
            shutil.copyfile(s, os.path.join(out_dir, f))


def export(hf_dir, args):
    cmd = [sys.executable, os.path.join(HERE, "export_onnx.py"), "--model", hf_dir, "--opset", str(args.opset),
           "-o", args.output]
    if args.external_data:
        cmd.append("--external-data")
    print("exporting:", " ".join(cmd), flush=True)
    p = subprocess.run(cmd)
    if p.returncode != 0:
        raise SystemExit(f"error: export_onnx.py failed with exit status {p.returncode}")


def verify_onnx(path, linears, intended):
    """Checks every encoder Linear's MatMul initializer in the ONNX file: same values as the
    pruned torch weight, and its zero 4x1 blocks (4 consecutive N entries in one K row) are
    exactly the pruned blocks. Returns a list of problems (empty = fine)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)  # loads external data from next to the file too
    inits = {t.name: t for t in model.graph.initializer}
    by_hash = {}
    for name, _, _, lin in linears:
        wt = np.ascontiguousarray(lin.weight.detach().numpy().T)  # [in, out] = K x N
        by_hash.setdefault(hashlib.sha256(wt.tobytes()).hexdigest(), []).append(name)
    found, problems = {}, []
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if w.ndim != 2:
            continue
        names = by_hash.get(hashlib.sha256(np.ascontiguousarray(w, dtype=np.float32).tobytes()).hexdigest())
        if not names:
            problems.append(f"MatMul {node.name}: initializer {node.input[1]} {list(w.shape)} matches no "
                            f"pruned encoder Linear")
            continue
        k, n = w.shape
        zero = np.all(w.reshape(k, n // BLOCK, BLOCK) == 0, axis=2)  # [K, N/4]
        for name in names:
            want = ~intended[name].numpy().T  # [out/4, in] keep -> [in, out/4] zero
            found.setdefault(name, []).append(node.name)
            if zero.shape != want.shape or not np.array_equal(zero, want):
                diff = int(np.sum(zero != want)) if zero.shape == want.shape else -1
                problems.append(f"{name} (MatMul {node.name}): zero 4x1 blocks differ from the mask in "
                                f"{diff} places")
    for name, _, _, _ in linears:
        if name not in found:
            problems.append(f"{name}: no MatMul initializer in {path} holds its weight")
    return problems, sum(len(v) for v in found.values())


# ---- main --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help='HF model directory, or "minilm" for the bundled all-MiniLM-L6-v2')
    src.add_argument("--random-config", choices=["bert-base", "bert-large", "tiny"],
                     help="randomly initialised BertModel of this size (tokenizer: MiniLM's)")
    ap.add_argument("--seed", type=int, default=0, help="seed for --random-config, the corpus and the shuffling")
    ap.add_argument("--sparsity", type=float, default=0.8, help="target fraction of zero 4x1 blocks (default 0.8)")
    ap.add_argument("--scope", choices=["global", "per-layer"], default="per-layer",
                    help="per-layer: every Linear reaches the target; global: one threshold over all")
    ap.add_argument("--finetune-steps", type=int, default=0, help="distillation steps with the mask fixed")
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64, help="token limit of corpus sentences")
    ap.add_argument("--corpus-size", type=int, default=4000, help="generated training sentences")
    ap.add_argument("--eval-sentences", type=int, default=200, help="held-out sentences for the cosine")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--opset", type=int, default=17, choices=[14, 17])
    ap.add_argument("-o", "--output", help="ONNX file to write (tokenizer files next to it)")
    ap.add_argument("--external-data", action="store_true", help="store ONNX weights in OUTPUT.data")
    ap.add_argument("--save-hf", metavar="DIR", help="also save the pruned HF model (and tokenizer) here")
    args = ap.parse_args()
    if not 0.0 <= args.sparsity <= 1.0:
        ap.error(f"--sparsity must be in [0, 1], not {args.sparsity}")
    if args.finetune_steps < 0:
        ap.error("--finetune-steps must be >= 0")
    torch.set_num_threads(args.threads if args.threads > 0 else (os.cpu_count() or 1))

    from transformers import BertTokenizerFast

    load_args = argparse.Namespace(model=args.model, random_config=args.random_config, seed=args.seed,
                                   gelu="erf")
    model, tok_dir = export_onnx.load_model(load_args)
    tokenizer = BertTokenizerFast.from_pretrained(tok_dir, local_files_only=True)
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    use_onednn_linears(model)
    use_onednn_linears(teacher)

    linears = encoder_linears(model)
    block_masks = compute_block_masks(linears, args.sparsity, args.scope)
    elem_masks = {name: expand_mask(m) for name, m in block_masks.items()}
    apply_masks(linears, elem_masks)
    print(f"pruned {len(linears)} encoder Linears to {args.sparsity:.2%} 4x1 block sparsity ({args.scope})")

    eval_texts = make_corpus(args.eval_sentences, seed=args.seed + 7)  # different seed: held out
    before = mean_cosine(model, teacher, tokenizer, eval_texts, args.max_length)
    print(f"mean-pooled cosine student vs teacher on {len(eval_texts)} held-out sentences: "
          f"before fine-tuning mean {before[0]:.4f} min {before[1]:.4f}")
    if args.finetune_steps:
        finetune(model, teacher, tokenizer, linears, elem_masks, args)
        after = mean_cosine(model, teacher, tokenizer, eval_texts, args.max_length)
        print(f"mean-pooled cosine student vs teacher on {len(eval_texts)} held-out sentences: "
              f"after {args.finetune_steps} steps mean {after[0]:.4f} min {after[1]:.4f}")

    sparsity_table(model, linears)
    # Fine-tuning must not have created or removed zero blocks.
    for name, _, _, lin in linears:
        z = zero_block_mask_torch(lin.weight)
        if not torch.equal(z, ~block_masks[name]):
            raise SystemExit(f"error: {name}: zero blocks differ from the mask after pruning/fine-tuning")

    if args.save_hf:
        save_hf(model, tok_dir, args.save_hf)
        print(f"saved the pruned HF model to {args.save_hf}")
    if args.output:
        tmp = None
        hf_dir = args.save_hf
        if not hf_dir:
            tmp = tempfile.mkdtemp(prefix="prune_bert_")
            hf_dir = tmp
            save_hf(model, tok_dir, hf_dir)
        try:
            export(hf_dir, args)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        problems, n = verify_onnx(args.output, linears, block_masks)
        if problems:
            for p in problems:
                print("error:", p, file=sys.stderr)
            raise SystemExit(1)
        total = sum(m.numel() for m in block_masks.values())
        zero = sum(int((~m).sum()) for m in block_masks.values())
        print(f"verified {args.output}: {n} MatMul weights (K x N) hold exactly the intended zero 4x1 blocks "
              f"({zero} of {total}, {zero / total:.4f})")


if __name__ == "__main__":
    main()

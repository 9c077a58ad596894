#!/usr/bin/env python3
"""A GUE-like DNA classification task trained on CPU in minutes: which synthetic species
(gen_dna.py) does a 70-500 bp sequence come from?

Steps (all deterministic for a given --seed):
  1. a BPE tokenizer (vocab 4096, train_tokenizer.py) on generated genomes, unless --tokenizer;
  2. train / held-out sequences of 70-500 bp from the species (held-out drawn with another seed);
  3. trains a small DNABERT-2-architecture classifier (model.py; [CLS] -> pooler -> classifier, as
     DNABERT-2's BertForSequenceClassification) from scratch and records its held-out accuracy;
  4. block-prunes it 4x1 (4 consecutive output channels x 1 input channel, by block L2 norm; the
     helpers of tools/prune_bert.py) on every encoder Linear (Wqkv, attention.output.dense,
     mlp.gated_layers, mlp.wo) in a few rising steps up to --sparsity, fine-tuning after each with
     the mask held fixed, and records the accuracy again;
  5. exports both with the classification head (export_onnx.py: outputs last_hidden_state and
     logits), checks ONNX Runtime against PyTorch and that the pruned ONNX weights hold exactly the
     intended zero blocks, and writes next to them

       OUT/heldout.json        {"label_names", "sequences", "labels"}   (also OUT/heldout.fa)
       OUT/dense/  OUT/pruned/ hf/ (checkpoint), model.onnx, tokenizer.json, predictions.json:
                               {"accuracy", "predictions", "logits", "sparsity", "config", ...}
       OUT/summary.json        both accuracies, the configuration, timings

PyTorch's predictions are computed from the same tokenizer.json ([CLS] seq [SEP], no truncation)
in padded batches; padding does not change a sequence's logits (mask -10000 -> exp underflows to 0).

Examples:
  train_task.py --quick -o /tmp/task-quick        (CI: < 3 minutes on 2 busy cores)
  train_task.py -o work/dnabert2/task             (full: 4 layers x 288, 6 heads)
"""

import argparse
import importlib.util
import json
import os
import random
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.dirname(HERE)
sys.path.insert(0, TOOLS)
import prune_bert  # noqa: E402  (tools/prune_bert.py: 4x1 block helpers)

sys.path.insert(0, HERE)
import gen_dna  # noqa: E402
import model as dm  # noqa: E402
import train_tokenizer  # noqa: E402

# tools/export_onnx.py is already imported as "export_onnx" by prune_bert; load ours by path.
_spec = importlib.util.spec_from_file_location("dnabert2_export_onnx", os.path.join(HERE, "export_onnx.py"))
dexport = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dexport)

MODES = {
    # layers, hidden, heads, intermediate, train seqs, held-out, epochs, prune steps (per stage), max bp
    "quick": dict(layers=2, hidden=96, heads=6, intermediate=192, n_train=1500, n_heldout=500, epochs=2,
                  stages=(0.5, 0.7, 0.8), stage_steps=20, tok_count=400, lr=2e-3),
    "full": dict(layers=4, hidden=288, heads=6, intermediate=576, n_train=4000, n_heldout=1000, epochs=2,
                 stages=(0.5, 0.7, 0.8, 0.85), stage_steps=40, tok_count=3000, lr=1e-3),
}
SPECIES = 5
LINEAR_PATHS = [("Wqkv", "attention.self.Wqkv"), ("attn_out", "attention.output.dense"),
                ("gated", "mlp.gated_layers"), ("wo", "mlp.wo")]


def encoder_linears(model):
    out = []
    for i, layer in enumerate(model.bert.encoder.layer):
        for short, path in LINEAR_PATHS:
            mod = layer
            for part in path.split("."):
                mod = getattr(mod, part)
            out.append((f"bert.encoder.layer.{i}.{path}", i, short, mod))
    return out


def tokenize(tok, seqs):
    return [tok.encode(s).ids for s in seqs]


def batches(ids, labels, batch_size, rng=None):
    """Length-bucketed padded batches (pad id 3); shuffled when rng is given."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(groups)
    for g in groups:
        s = max(len(ids[i]) for i in g)
        x = torch.full((len(g), s), 3, dtype=torch.long)
        m = torch.zeros((len(g), s), dtype=torch.long)
        for r, i in enumerate(g):
            x[r, :len(ids[i])] = torch.tensor(ids[i])
            m[r, :len(ids[i])] = 1
        yield g, x, m, torch.tensor([labels[i] for i in g])


@torch.no_grad()
def predict(model, ids, labels, batch_size=64):
    model.eval()
    logits = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    for g, x, m, _ in batches(ids, labels, batch_size):
        logits[g] = model(x, m)[1].numpy()
    pred = logits.argmax(1)
    return float((pred == np.asarray(labels)).mean()), pred, logits


def train_steps(model, ids, labels, steps, lr, batch_size, seed, masks=None, linears=None, log=""):
    """AdamW with linear warm-up and decay; with masks, pruned weights stay exactly 0."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min((k + 1) / warm, max(0.0, (steps - k) / max(1, steps - warm))))
    model.train()
    step, t0, run = 0, time.time(), []
    while step < steps:
        for _, x, m, y in batches(ids, labels, batch_size, rng):
            loss = torch.nn.functional.cross_entropy(model(x, m)[1], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if masks is not None:
                prune_bert.apply_masks(linears, masks)
            run.append(loss.item())
            step += 1
            if step % max(1, steps // 5) == 0 or step == steps:
                print(f"  {log}step {step}/{steps}  loss {np.mean(run[-50:]):.4f}  ({time.time() - t0:.0f} s)",
                      flush=True)
            if step >= steps:
                break
    model.eval()


def save_model_dir(model, out, tok_path, opset):
    hf = os.path.join(out, "hf")
    dm.save_folder(model, hf, extra_config={"id2label": {str(i): f"species_{i}" for i in range(SPECIES)}})
    import shutil
    shutil.copyfile(tok_path, os.path.join(hf, "tokenizer.json"))
    shutil.copyfile(tok_path, os.path.join(out, "tokenizer.json"))
    loaded = dm.load_folder(hf)  # export what a user would load
    path = os.path.join(out, "model.onnx")
    dexport.export(loaded, path, opset)
    dm.use_onednn(loaded)
    worst = dexport.check(loaded, path, cases=[[1], [30, 7], [120, 64, 3]])
    print(f"  exported {path}: ONNX Runtime vs PyTorch max |diff| " +
          ", ".join(f"{k} {v:.1e}" for k, v in worst.items()), flush=True)
    if max(worst.values()) > 1e-4:
        raise SystemExit("error: ONNX Runtime differs from PyTorch")
    return path


def write_predictions(path, acc, pred, logits, extra):
    d = {"accuracy": acc, "predictions": [int(p) for p in pred],
         "logits": [[round(float(v), 6) for v in row] for row in logits]}
    d.update(extra)
    with open(path, "w") as f:
        json.dump(d, f)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the CI-sized run")
    ap.add_argument("-o", "--output", required=True, help="folder to write")
    ap.add_argument("--tokenizer", help="tokenizer.json to use instead of training one")
    ap.add_argument("--sparsity", type=float, help="final 4x1 block sparsity (default: last stage, 0.8 / 0.85)")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--intermediate", type=int)
    ap.add_argument("--epochs", type=float)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--opset", type=int, default=17, choices=[14, 17])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared, oversubscribed machine OpenMP's barriers make "
                         "2 threads far slower than 1; 0: all cores)")
    args = ap.parse_args()
    mode = "quick" if args.quick else "full"
    P = dict(MODES[mode])
    for k in ("layers", "hidden", "heads", "intermediate", "epochs"):
        if getattr(args, k) is not None:
            P[k] = getattr(args, k)
    stages = list(P["stages"])
    if args.sparsity is not None:
        if not 0.0 < args.sparsity < 1.0:
            ap.error("--sparsity must be in (0, 1)")
        stages = [s for s in stages if s < args.sparsity] + [args.sparsity]
    torch.set_num_threads(args.threads if args.threads > 0 else (os.cpu_count() or 1))
    torch.manual_seed(args.seed)
    t_start = time.time()
    print(f"[{mode}] torch threads {torch.get_num_threads()}", flush=True)
    out = args.output
    os.makedirs(out, exist_ok=True)

    # 1. tokenizer
    tok_path = os.path.join(out, "tokenizer.json")
    if args.tokenizer:
        import shutil
        shutil.copyfile(args.tokenizer, tok_path)
    else:
        corpus = [s for s, _ in gen_dna.corpus(P["tok_count"], 200, 2000, SPECIES, seed=0)]
        train_tokenizer.train(corpus, 4096).save(tok_path)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(tok_path)
    print(f"[{mode}] tokenizer {tok_path} (vocab {tok.get_vocab_size()})", flush=True)

    # 2. data: the species of gen_dna seed 0; train and held-out sampled with other seeds
    tr_seqs, tr_y = gen_dna_split(P["n_train"], 1000 + args.seed)
    ho_seqs, ho_y = gen_dna_split(P["n_heldout"], 2000 + args.seed)
    tr_ids, ho_ids = tokenize(tok, tr_seqs), tokenize(tok, ho_seqs)
    print(f"  {len(tr_ids)} training / {len(ho_ids)} held-out sequences, "
          f"{np.mean([len(i) for i in tr_ids]):.0f} tokens on average (max {max(len(i) for i in tr_ids)})",
          flush=True)
    with open(os.path.join(out, "heldout.json"), "w") as f:
        json.dump({"label_names": [f"species_{i}" for i in range(SPECIES)], "sequences": ho_seqs,
                   "labels": ho_y}, f)
        f.write("\n")
    with open(os.path.join(out, "heldout.fa"), "w") as f:
        for k, (s, y) in enumerate(zip(ho_seqs, ho_y)):
            f.write(f">heldout{k} label={y}\n")
            for i in range(0, len(s), 60):
                f.write(s[i:i + 60] + "\n")

    # 3. dense training
    cfg = dm.Config(vocab_size=tok.get_vocab_size(), hidden_size=P["hidden"], num_hidden_layers=P["layers"],
                    num_attention_heads=P["heads"], intermediate_size=P["intermediate"], num_labels=SPECIES,
                    pad_token_id=tok.token_to_id("[PAD]"))
    model = dm.init_weights(dm.Wrapper(cfg, classifier=True), args.seed)
    dm.use_onednn(model)
    steps = int(P["epochs"] * ((len(tr_ids) + args.batch_size - 1) // args.batch_size))
    print(f"  training {P['layers']} x {P['hidden']}, {P['heads']} heads, GEGLU 2x{P['intermediate']}: "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {steps} steps", flush=True)
    t0 = time.time()
    train_steps(model, tr_ids, tr_y, steps, P["lr"], args.batch_size, args.seed, log="dense ")
    t_dense = time.time() - t0
    dense_acc, dense_pred, dense_logits = predict(model, ho_ids, ho_y)
    print(f"  dense held-out accuracy {dense_acc:.4f}", flush=True)
    dense_sd = {k: v.clone() for k, v in model.state_dict().items()}

    # 4. gradual 4x1 block pruning with fine-tuning
    linears = encoder_linears(model)
    t0 = time.time()
    for k, s in enumerate(stages):
        block_masks = prune_bert.compute_block_masks(linears, s, "per-layer")
        masks = {n: prune_bert.expand_mask(m) for n, m in block_masks.items()}
        prune_bert.apply_masks(linears, masks)
        acc0 = predict(model, ho_ids, ho_y)[0]
        train_steps(model, tr_ids, tr_y, P["stage_steps"] * (2 if k == len(stages) - 1 else 1), P["lr"] / 2,
                    args.batch_size, args.seed + 10 + k, masks, linears, log=f"prune {s:.2f} ")
        print(f"  sparsity {s:.2f}: held-out accuracy {acc0:.4f} after pruning, "
              f"{predict(model, ho_ids, ho_y)[0]:.4f} after fine-tuning", flush=True)
    t_prune = time.time() - t0
    for name, _, _, lin in linears:
        if not torch.equal(prune_bert.zero_block_mask_torch(lin.weight), ~block_masks[name]):
            raise SystemExit(f"error: {name}: zero blocks differ from the mask")
    per = {n: round(float(prune_bert.zero_block_mask_torch(lin.weight).float().mean()), 6)
           for n, _, _, lin in linears}
    pruned_acc, pruned_pred, pruned_logits = predict(model, ho_ids, ho_y)
    total = sum(m.numel() for m in block_masks.values())
    zero = sum(int((~m).sum()) for m in block_masks.values())
    print(f"  pruned held-out accuracy {pruned_acc:.4f} at {zero / total:.4f} 4x1 block sparsity", flush=True)

    # 5. export both, verify, write predictions
    dense = dm.Wrapper(cfg, classifier=True)
    dense.load_state_dict(dense_sd)
    common = {"config": cfg.to_dict(), "heldout": "../heldout.json", "tokenizer": "tokenizer.json",
              "mode": mode, "seed": args.seed}
    results = {}
    for name, m, acc, pred, logits, sp in (("dense", dense, dense_acc, dense_pred, dense_logits, 0.0),
                                           ("pruned", model, pruned_acc, pruned_pred, pruned_logits,
                                            zero / total)):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        path = save_model_dir(m, d, tok_path, args.opset)
        if name == "pruned":
            problems, n = prune_bert.verify_onnx(path, linears, block_masks)
            if problems:
                raise SystemExit("error: " + "; ".join(problems))
            print(f"  verified {path}: {n} MatMul weights hold exactly the intended zero 4x1 blocks", flush=True)
        extra = dict(common, block_sparsity=sp)
        if name == "pruned":
            extra["block_sparsity_per_linear"] = per
            extra["stages"] = stages
        write_predictions(os.path.join(d, "predictions.json"), acc, pred, logits, extra)
        results[name] = {"accuracy": acc, "block_sparsity": sp, "onnx": os.path.relpath(path, out)}
    summary = {"mode": mode, "config": cfg.to_dict(), "train_sequences": len(tr_ids),
               "heldout_sequences": len(ho_ids), "results": results, "seconds": {
                   "dense_training": round(t_dense), "pruning": round(t_prune),
                   "total": round(time.time() - t_start)}, "torch_threads": torch.get_num_threads()}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(f"[{mode}] dense accuracy {dense_acc:.4f}, pruned ({zero / total:.2%} 4x1 blocks) {pruned_acc:.4f}; "
          f"{time.time() - t_start:.0f} s; wrote {out}", flush=True)


def gen_dna_split(n, seed):
    """n sequences of 70-500 bp, species round-robin, from species seed 0 with sampling seed `seed`."""
    species = gen_dna.make_species(SPECIES, seed=0)
    rng = np.random.default_rng([seed, 15485863])
    seqs, labels = [], []
    for k in range(n):
        sp = species[k % SPECIES]
        seqs.append(sp.sample(int(rng.integers(70, 501)), rng))
        labels.append(sp.index)
    return seqs, labels


if __name__ == "__main__":
    main()

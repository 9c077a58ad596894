#!/usr/bin/env python3
"""Train a DNABERT-2-style BPE tokenizer on generated DNA (gen_dna.py) with HF `tokenizers`.

The result has the structure of the tokenizer.json DNABERT-2 ships: a BPE model (no
continuing-subword prefix, no end-of-word suffix, unk_token [UNK], no byte fallback), the
specials [UNK] [CLS] [SEP] [PAD] [MASK] as ids 0..4 followed by the letters, no normalizer
(lower case letters are not letters of the vocabulary, so they become [UNK]), a Whitespace
pre-tokenizer, and the post-processor TemplateProcessing "[CLS] $A [SEP]" (pairs
"[CLS] $A [SEP] $B:1 [SEP]:1").

Examples:
  train_tokenizer.py --vocab 4096 -o work/dnabert2/tokenizer.json
  train_tokenizer.py --vocab 256 --count 300 -o /tmp/tok-small.json     (seconds; for tests)
"""

import argparse
import os
import sys

from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_dna  # noqa: E402

SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]


def train(sequences, vocab_size, max_token_length=None):
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=list("ACGT"),
                                  min_frequency=2, show_progress=False, max_token_length=max_token_length)
    tok.train_from_iterator(sequences, trainer=trainer, length=len(sequences))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=4096, help="vocabulary size, specials included")
    ap.add_argument("--count", type=int, default=3000, help="generated training sequences")
    ap.add_argument("--min-len", type=int, default=200)
    ap.add_argument("--max-len", type=int, default=2000)
    ap.add_argument("--species", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True, help="tokenizer.json to write")
    args = ap.parse_args()
    seqs = [s for s, _ in gen_dna.corpus(args.count, args.min_len, args.max_len, args.species, args.seed)]
    tok = train(seqs, args.vocab)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tok.save(args.output)
    ids = [tok.token_to_id(s) for s in SPECIALS]
    assert ids == list(range(5)), ids
    enc = tok.encode(seqs[0][:300])
    print(f"wrote {args.output}: vocab {tok.get_vocab_size()}, {len(seqs)} training sequences; "
          f"300 bp -> {len(enc.ids) - 2} tokens")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Synthetic DNA from several "species" with distinct k-mer statistics, deterministic per seed.

A species is
  * an order-3 Markov chain over A/C/G/T whose transition rows are drawn from a Dirichlet
    (concentration 2, so that each species prefers different 4-mers while
    BPE still finds about 5 bp per token, as DNABERT-2 does on real genomes), tilted towards its own
    GC content (0.3 .. 0.65);
  * a small family of species-specific "repeat elements" (8-24 bp words, some copies mutated)
    inserted now and then, as transposons and tandem repeats are in real genomes; they give BPE
    long frequent words to merge.
Everything is drawn from numpy Generators seeded by (seed, species index), so the same
arguments give the same sequences on every machine.

Examples:
  gen_dna.py --species 5 --count 2000 --min-len 200 --max-len 2000 --seed 0 -o dna.txt
  gen_dna.py --species 3 --count 10 --fasta -o seqs.fa
"""

import argparse

import numpy as np

BASES = "ACGT"
ORDER = 3


class Species:
    def __init__(self, index, seed=0):
        self.index = index
        rng = np.random.default_rng([seed, 7919, index])
        gc = rng.uniform(0.3, 0.65)
        tilt = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
        rows = rng.dirichlet([2.0] * 4, size=4 ** ORDER) * tilt * 4
        rows /= rows.sum(axis=1, keepdims=True)
        self.cum = np.cumsum(rows, axis=1)
        self.gc = gc
        n_rep = int(rng.integers(4, 9))
        self.repeats = ["".join(BASES[b] for b in rng.integers(0, 4, int(rng.integers(8, 25))))
                        for _ in range(n_rep)]
        self.repeat_rate = float(rng.uniform(0.004, 0.012))  # insertions per base

    def sample(self, n, rng):
        """One sequence of exactly n bases."""
        out = []
        u = rng.random(n)
        ins = rng.random(n) < self.repeat_rate
        ctx = int(rng.integers(0, 4 ** ORDER))
        i = 0
        cum = self.cum
        while i < n:
            if ins[i]:
                w = self.repeats[int(rng.integers(0, len(self.repeats)))]
                if rng.random() < 0.3:  # a mutated copy
                    j = int(rng.integers(0, len(w)))
                    w = w[:j] + BASES[int(rng.integers(0, 4))] + w[j + 1:]
                out.append(w)
                i += len(w)
                for ch in w[-ORDER:]:
                    ctx = (ctx * 4 + BASES.index(ch)) % (4 ** ORDER)
                continue
            row = cum[ctx]
            x = u[i]
            b = 0 if x < row[0] else 1 if x < row[1] else 2 if x < row[2] else 3
            out.append(BASES[b])
            ctx = (ctx * 4 + b) % (4 ** ORDER)
            i += 1
        return "".join(out)[:n]


def make_species(n, seed=0):
    return [Species(i, seed) for i in range(n)]


def corpus(count, min_len, max_len, n_species=5, seed=0):
    """[(sequence, species index)], species round-robin, lengths uniform in [min_len, max_len]."""
    species = make_species(n_species, seed)
    rng = np.random.default_rng([seed, 104729])
    out = []
    for k in range(count):
        sp = species[k % n_species]
        n = int(rng.integers(min_len, max_len + 1))
        out.append((sp.sample(n, rng), sp.index))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--species", type=int, default=5)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--min-len", type=int, default=200)
    ap.add_argument("--max-len", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fasta", action="store_true", help="FASTA records (60 columns) instead of one per line")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    with open(args.output, "w") as f:
        for k, (s, sp) in enumerate(corpus(args.count, args.min_len, args.max_len, args.species, args.seed)):
            if args.fasta:
                f.write(f">seq{k} species={sp}\n")
                for i in range(0, len(s), 60):
                    f.write(s[i:i + 60] + "\n")
            else:
                f.write(s + "\n")


if __name__ == "__main__":
    main()

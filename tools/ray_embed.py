#!/usr/bin/env python3
"""Embeds a corpus larger than one machine with Ray Data: one spinel session per actor.

Input: a text file (one text per line, every line an input as in `spinel run --input`: a
trailing '\\r' is dropped, blank lines are inputs too) or a FASTA file (`--fasta`: one input per
record, the sequence lines joined, blanks dropped, letters upper-cased, as `spinel run --fasta`
does; a letter outside the IUPAC nucleotide codes is an error naming the record).
Output: a folder of Parquet files, one row per input:
  text:  id (int64, the line number from 0), text (string), tokens (int32), embedding (list<float32>)
  FASTA: id (int64, the record number from 0), name (string), length (int64, bp), tokens (int32),
         embedding (list<float32>)
Rows come out in no particular order; `id` says which input each one is.

The pipeline (ray.data, streaming):
  1. one task scans the input once and cuts it into byte ranges of about --chunk-mb MiB that
     end at a line (text) or before a '>' header (FASTA), counting the inputs before each range;
  2. read tasks turn each range into rows (id, text or name/sequence);
  3. map_batches with a callable class (an actor pool of --actors actors, each reserving
     --threads CPUs) holds ONE spinel Model and Session per actor (threads = --threads) and
     embeds --batch-size inputs per call (one packed batch, no padding);
  4. write_parquet.
Progress is Ray Data's own progress bars.

Where it runs (--address):
  local              a fresh Ray instance on this machine (--num-cpus, default actors x threads)
  auto               the Ray cluster this machine belongs to (`ray start --head` / `--address`)
  ray://HOST:10001   a remote cluster through Ray Client (the driver stays here)

What every node needs: the spinel Python binding importable and libspinel.so loadable (pip
install the binding from a `cmake --install` tree on each node, or pass --library PATH and
--pythonpath DIR when both are on a shared filesystem), and the input and output paths
reachable (a shared filesystem, or any URI pyarrow.fs understands, e.g. s3://bucket/corpus.txt).
The model: by default its path must be readable on every node (shared filesystem); with
--ship-model the driver reads the file once, puts its bytes in Ray's object store (ray.put) and
every actor loads it with spinel.Model.from_bytes, so no node needs the file.

Examples (from the repository root):
  .venv/bin/python tools/ray_embed.py work/minilm/minilm.spnl --input corpus.txt -o out/ \\
      --address local --actors 2 --threads 1 --batch-size 64 --pool mean --normalize
  .venv/bin/python tools/ray_embed.py /shared/minilm.spnl --input /shared/corpus.txt \\
      -o /shared/embeddings/ --address ray://head:10001 --actors 16 --threads 4 --ship-model
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUCLEOTIDES = frozenset("ACGTURYKMSWBDHVN")


# ---- 1. the plan: byte ranges of the input -----------------------------------------------

def _filesystem(path):
    import pyarrow.fs as pafs

    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def plan_ranges(path, fasta, chunk_bytes, min_ranges=1):
    """[(start, end, first_id)]: byte ranges of `path` that end after a newline (text) or before
    a line starting with '>' (FASTA), about chunk_bytes each but at least min_ranges of them when
    the file is large enough (so that every actor gets work); first_id counts the inputs (lines
    or records) before the range. One sequential pass, constant memory."""
    fs, p = _filesystem(path)
    size = fs.get_file_info(p).size
    chunk_bytes = max(4096, min(chunk_bytes, size // max(1, min_ranges) + 1))
    ranges, start, first, carry = [], 0, 0, b""
    sep = b"\n>" if fasta else b"\n"
    with fs.open_input_stream(p) as f:
        while True:
            buf = f.read(chunk_bytes)
            data = carry + buf
            if not buf:
                break
            cut = data.rfind(sep)
            if cut < 0:  # one input longer than a chunk: keep reading
                carry = data
                continue
            cut += 1  # the range ends after the newline
            piece = data[:cut]
            ranges.append((start, start + cut, first))
            first += _count_inputs(piece, fasta)
            start += cut
            carry = data[cut:]
    if carry:
        ranges.append((start, start + len(carry), first))
    return ranges


def _count_inputs(piece, fasta):
    if fasta:
        return piece.count(b"\n>") + (1 if piece.startswith(b">") else 0)
    return piece.count(b"\n")


# ---- 2. reading a range into rows ------------------------------------------------------------

def read_range(row, path, fasta):
    """One planned range -> its rows (a list of dicts, for Dataset.flat_map)."""
    fs, p = _filesystem(path)
    with fs.open_input_file(p) as f:
        f.seek(int(row["start"]))
        data = f.read(int(row["end"]) - int(row["start"]))
    first = int(row["first_id"])
    if int(row["start"]) == 0 and data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # byte order mark, dropped as spinel run does
    text = data.decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the range (or the file)
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if not fasta:
        return [{"id": first + i, "text": ln} for i, ln in enumerate(lines)]
    return _fasta_rows(lines, first, path)


def _fasta_rows(lines, first, path):
    rows, name, seq = [], None, []

    def finish():
        if name is None:
            return
        s = "".join(seq).upper()
        bad = set(s) - NUCLEOTIDES
        if bad:
            raise ValueError(f"{path}: record '{name}': {sorted(bad)[0]!r} is not a nucleotide letter "
                             f"(IUPAC codes {''.join(sorted(NUCLEOTIDES))}, either case)")
        if not s:
            raise ValueError(f"{path}: record '{name}' has no sequence")
        rows.append({"id": first + len(rows), "name": name, "text": s, "length": len(s)})

    for ln in lines:
        if not ln.strip(" \t"):
            continue
        if ln.startswith(">"):
            finish()
            parts = ln[1:].split()
            name = parts[0] if parts else ""
            if not name:
                raise ValueError(f"{path}: record {first + len(rows)}: the header has no name after '>'")
            seq = []
        else:
            if name is None:
                raise ValueError(f"{path}: sequence before the first header line")
            seq.append(ln.replace(" ", "").replace("\t", ""))
    finish()
    return rows


# ---- 3. the embedder: one session per actor ---------------------------------------------------

class Embedder:
    """A Ray Data callable class: each actor loads the model once and keeps one session."""

    def __init__(self, model_path, model_ref, threads, pool, normalize, fasta):
        import spinel

        if model_ref is not None:
            import ray

            data = ray.get(model_ref[0])  # wrapped in a list so Ray does not resolve it for us
            self.model = spinel.Model.from_bytes(data, name=os.path.basename(model_path))
            del data
        else:
            self.model = spinel.Model(model_path)
        self.session = self.model.session(threads=threads)
        self.pool, self.normalize, self.fasta = pool, normalize, fasta

    def __call__(self, batch):
        import numpy as np
        import pyarrow as pa

        texts = [str(t) for t in batch["text"]]
        with self.session.run_texts(texts) as r:
            emb = r.pooled(self.pool, self.normalize)
            tokens = np.diff(r.offsets).astype(np.int32)
        n, width = emb.shape
        embedding = pa.ListArray.from_arrays(pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32)),
                                             pa.array(emb.reshape(-1), type=pa.float32()))
        cols = {"id": pa.array(np.asarray(batch["id"], dtype=np.int64))}
        if self.fasta:
            cols["name"] = pa.array([str(x) for x in batch["name"]], type=pa.string())
            cols["length"] = pa.array(np.asarray(batch["length"], dtype=np.int64))
        else:
            cols["text"] = pa.array(texts, type=pa.string())
        cols["tokens"] = pa.array(tokens)
        cols["embedding"] = embedding
        return pa.table(cols)


# ---- the driver -------------------------------------------------------------------------------

def build_dataset(args, model_ref):
    import ray

    plan = ray.remote(num_cpus=0)(plan_ranges)
    ranges = ray.get(plan.remote(args.input, args.fasta, int(args.chunk_mb * (1 << 20)), 4 * args.actors))
    if not ranges:
        raise SystemExit(f"error: {args.input} is empty")
    ds = ray.data.from_items([{"start": s, "end": e, "first_id": f} for s, e, f in ranges],
                             override_num_blocks=len(ranges))
    # Reading (and writing, below) is I/O and splitting: it reserves no CPU, so that it never
    # waits for the actors, which reserve all of them, to give theirs back.
    ds = ds.flat_map(read_range, fn_kwargs={"path": args.input, "fasta": args.fasta}, num_cpus=0)
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"model_path": args.model, "model_ref": model_ref, "threads": args.threads,
                               "pool": args.pool, "normalize": args.normalize, "fasta": args.fasta},
        batch_size=args.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=args.actors), num_cpus=args.threads)
    return ds, len(ranges)


def runtime_env(args):
    env = {"OMP_WAIT_POLICY": "PASSIVE"}  # idle OpenMP workers of one actor must not spin
    if args.library:
        env["SPINEL_LIBRARY"] = os.path.abspath(args.library) if "://" not in args.library else args.library
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in args.pythonpath.split(os.pathsep))
    return {"env_vars": env}


def count_rows(folder):
    """Rows in the Parquet files under `folder` (read from their footers)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, p = _filesystem(folder)
    return sum(pq.ParquetFile(fs.open_input_file(i.path)).metadata.num_rows
               for i in fs.get_file_info(pafs.FileSelector(p, recursive=True)) if i.path.endswith(".parquet"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help=".spnl model (readable on every node unless --ship-model)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="text corpus, one text per line")
    src.add_argument("--fasta", metavar="FILE", help="FASTA file, one input per record")
    ap.add_argument("-o", "--output", required=True, help="output folder of Parquet files (or a URI)")
    ap.add_argument("--address", default="local",
                    help="local (a fresh Ray on this machine), auto (the cluster this machine is in) "
                         "or ray://HOST:PORT (Ray Client); default local")
    ap.add_argument("--actors", type=int, default=1, help="actors, each with one spinel session (default 1)")
    ap.add_argument("--threads", type=int, default=1,
                    help="threads per session = CPUs each actor reserves (default 1)")
    ap.add_argument("--batch-size", type=int, default=64, help="inputs per spinel run (default 64)")
    ap.add_argument("--pool", default=None, help="cls, mean, pooler, ... (default: the model's own)")
    ap.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                    help="L2-normalize the vectors (default: the model's own when --pool is not given)")
    ap.add_argument("--ship-model", action="store_true",
                    help="send the model's bytes through Ray's object store (no shared filesystem needed)")
    ap.add_argument("--library", help="libspinel.so path on the nodes (sets SPINEL_LIBRARY for the workers)")
    ap.add_argument("--pythonpath", help="PYTHONPATH for the workers, e.g. the repository's python/ folder")
    ap.add_argument("--num-cpus", type=int, default=0,
                    help="--address local: CPUs of the local Ray (default: actors x threads)")
    ap.add_argument("--chunk-mb", type=float, default=8.0, help="MiB of input per read task (default 8)")
    args = ap.parse_args(argv)
    if args.fasta:
        args.input, args.fasta = args.fasta, True
    else:
        args.fasta = False
    for name in ("actors", "threads", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")

    import ray

    renv = runtime_env(args)
    if args.address == "local":
        ray.init(num_cpus=args.num_cpus or args.actors * args.threads, include_dashboard=False,
                 runtime_env=renv, log_to_driver=True)
    else:
        ray.init(address=args.address, runtime_env=renv)

    model_ref = None
    if args.ship_model:
        with open(args.model, "rb") as f:
            model_ref = [ray.put(f.read())]
    t0 = time.perf_counter()
    ds, nranges = build_dataset(args, model_ref)
    ds.write_parquet(args.output, ray_remote_args={"num_cpus": 0})
    seconds = time.perf_counter() - t0
    count = count_rows(args.output)
    print(f"ray_embed: {count} inputs in {seconds:.1f} s ({count / seconds:.1f} inputs/s), "
          f"{nranges} read ranges, {args.actors} actors x {args.threads} threads, batch {args.batch_size} "
          f"-> {args.output}", file=sys.stderr, flush=True)
    ray.shutdown()
    return count, seconds


if __name__ == "__main__":
    main()

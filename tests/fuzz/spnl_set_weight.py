#!/usr/bin/env python3
"""Sets one element of a weight in a .spnl file and reseals its checksums
(the blob's in the tensor table, then the metadata checksum), e.g.

  .venv/bin/python tests/fuzz/spnl_set_weight.py int8_dense.spnl embeddings.ln.beta 0 nan -o out.spnl

(how the reproducers in regressions/fuzz_spnl were made from the seeds).
"""
import argparse
import struct

import xxhash


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spnl")
    ap.add_argument("tensor")
    ap.add_argument("index", type=int)
    ap.add_argument("value", type=float)
    ap.add_argument("-o", "--output", required=True)
    a = ap.parse_args()
    b = bytearray(open(a.spnl, "rb").read())
    off = struct.unpack_from("<5Q", b, 24)
    p = off[3]
    (n,) = struct.unpack_from("<I", b, p)
    p += 4
    for _ in range(n):
        (ln,) = struct.unpack_from("<I", b, p)
        name = b[p + 4:p + 4 + ln].decode()
        p += 4 + ln
        dtype, ndim = struct.unpack_from("<IQ", b, p)
        p += 12 + 8 * ndim
        toff, nbytes, _ = struct.unpack_from("<3Q", b, p)
        if name == a.tensor:
            if dtype != 1:
                raise SystemExit(f"{name} is not f32")
            blob = off[4] + toff
            struct.pack_into("<f", b, blob + 4 * a.index, a.value)
            struct.pack_into("<Q", b, p + 16, xxhash.xxh3_64_intdigest(bytes(b[blob:blob + nbytes])))
            break
        p += 24
    else:
        raise SystemExit(f"no tensor {a.tensor}")
    struct.pack_into("<Q", b, 104, 0)
    struct.pack_into("<Q", b, 104, xxhash.xxh3_64_intdigest(bytes(b[:off[4]])))
    open(a.output, "wb").write(b)


if __name__ == "__main__":
    main()

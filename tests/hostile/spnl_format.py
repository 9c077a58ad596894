"""The .spnl file layout (format version 3), for tests that take files apart.

runtime/spnl.cpp is the reference; this module mirrors it so the tests can
find every field of a valid file, change it, and reseal the checksums so the
loader's deeper checks are reached:

    [header 128 B][config][tokenizer][graph][tensor table][pad][data: 64-B aligned blobs]

* read_header / write_header          -- the 128-byte header as a dict
* walk_config / walk_tokenizer / walk_graph / walk_tensors
                                      -- every field with its absolute position
* poke(buf, field, value)             -- overwrite one field (ints wrap to its width)
* reseal(buf, weights=False)          -- recompute meta_checksum (and the blob checksums)
* splice(buf, start, end, new)        -- replace bytes inside the metadata, re-laying
                                         the sections out (offsets, sizes, checksum)
* assemble(sections, data)            -- a whole file from section bytes, as the writer does
* record / add_op_attr / set_op_slots / add_config_field
                                      -- format-3 tagged records spliced into a file

Format 3 sections (little-endian; str = u32 length + bytes; record = str tag, u8 type
(1 i64, 2 f32, 3 str, 4 bool), value):

    config     u32 count, records (every field: architecture, vocab_size, ...)
    tokenizer  str kind ("wordpiece"), then that kind's own serialization
    graph      u32 value count, values (str name, i64 width, u32 rows)
               u32 op count, ops (u32 kind, str name, i32 in0, in1, out,
                                  u32 slot count, i32 slots, u32 count, attribute records)
               i32 output (last_hidden_state), u32 named output count, (str name, i32 value)
    tensors    u32 count, (str name, u32 dtype, u64 ndim, i64 dims, u64 offset, nbytes, checksum)
"""

import struct
from collections import namedtuple

import xxhash

MAGIC = b"SPINEL\x1a\n"
VERSION = 3
ENDIAN_TAG = 0x01020304
ALIGN = 64
HEADER_SIZE = 128
# magic, version, endian, file_size, offset[5], size[5], meta_checksum, reserved
HEADER = struct.Struct("<8sIIQ5Q5QQ16s")
assert HEADER.size == HEADER_SIZE
VERSION_AT, ENDIAN_AT, FILE_SIZE_AT, OFFSETS_AT, SIZES_AT, CHECKSUM_AT = 8, 12, 16, 24, 64, 104
# Section order, and the names the loader uses in its messages.
SECTIONS = ["config", "tokenizer", "graph", "tensors", "data"]
SECTION_NAMES = ["config", "tokenizer", "graph", "tensor table", "data"]
CONFIG, TOKENIZER, GRAPH, TENSORS, DATA = range(5)

DTYPES = {1: ("f32", 4), 2: ("s8", 1), 3: ("s32", 4), 4: ("u8", 1), 5: ("s64", 8)}
OP_KINDS = {1: "Embedding", 2: "Linear", 3: "Attention", 4: "LayerNorm", 5: "Pool"}
EMBEDDING, LINEAR, ATTENTION, LAYERNORM, POOL = 1, 2, 3, 4, 5
# Record value types.
I64, F32, STR, BOOL = 1, 2, 3, 4
RECORD_FMT = {I64: "<q", F32: "<f", BOOL: "<B"}
TOKENIZER_MAGIC = 0x4B545057  # "WPTK"


def xxh3(data):
    return xxhash.xxh3_64_intdigest(bytes(data))


# ---- header ------------------------------------------------------------------------

def read_header(data):
    magic, version, endian, size, *rest = HEADER.unpack_from(data, 0)
    return dict(magic=magic, version=version, endian=endian, size=size,
                offsets=list(rest[0:5]), sizes=list(rest[5:10]), checksum=rest[10],
                reserved=rest[11])


def write_header(buf, h):
    HEADER.pack_into(buf, 0, h["magic"], h["version"], h["endian"], h["size"], *h["offsets"],
                     *h["sizes"], h["checksum"], h["reserved"])


def meta_checksum(buf):
    """XXH3-64 of the header with its checksum field zeroed, then bytes 128..offset[data].

    When offset[data] is not inside the file (a damaged header) the hash covers
    what there is: the loader rejects such a file before it compares checksums.
    """
    h = read_header(buf)
    head = bytearray(buf[:HEADER_SIZE])
    head[CHECKSUM_AT:CHECKSUM_AT + 8] = bytes(8)
    end = min(max(h["offsets"][DATA], HEADER_SIZE), len(buf))
    st = xxhash.xxh3_64()
    st.update(bytes(head))
    st.update(bytes(buf[HEADER_SIZE:end]))
    return st.intdigest()


def reseal(buf, weights=False):
    """Recomputes meta_checksum in place (after the blob checksums if `weights`)."""
    if weights:
        h = read_header(buf)
        base = h["offsets"][DATA]
        for e in walk_tensors(buf):
            lo, n = base + e.offset.value, e.nbytes.value
            if lo + n <= len(buf):
                poke(buf, e.checksum, xxh3(buf[lo:lo + n]))
    struct.pack_into("<Q", buf, CHECKSUM_AT, meta_checksum(buf))
    return buf


# ---- fields ---------------------------------------------------------------------------

# One scalar at absolute position `at`, struct format `fmt` ("<I", "<q", "<f" ...).
Field = namedtuple("Field", "at fmt value")
# A u32-length-prefixed string: `length` is the Field of its length, text starts at `text_at`.
Str = namedtuple("Str", "length text text_at end")


def poke(buf, field, value):
    """Writes `value` into `field`; integers wrap to the field's width (so -1 in a u64
    is 2^64-1 and 2^63 in an i64 is -2^63)."""
    code = field.fmt[-1]
    if code in "fd":
        struct.pack_into(field.fmt, buf, field.at, value)
        return
    size = struct.calcsize(field.fmt)
    struct.pack_into(field.fmt[:-1] + code.upper(), buf, field.at, int(value) % (1 << (8 * size)))


class _Reader:
    def __init__(self, buf, start, size):
        self.buf, self.pos, self.end = buf, start, start + size

    def get(self, fmt):
        n = struct.calcsize(fmt)
        if self.pos + n > self.end:
            raise ValueError(f"section ends at {self.end}, reading {fmt} at {self.pos}")
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        f = Field(self.pos, fmt, v)
        self.pos += n
        return f

    def get_str(self):
        n = self.get("<I")
        if self.pos + n.value > self.end:
            raise ValueError(f"string of {n.value} bytes at {n.at} passes the section end")
        s = Str(n, bytes(self.buf[self.pos:self.pos + n.value]).decode("utf-8", "replace"),
                self.pos, self.pos + n.value)
        self.pos += n.value
        return s


def _reader(buf, section):
    h = read_header(buf)
    return _Reader(buf, h["offsets"][section], h["sizes"][section])


def _done(r, what):
    if r.pos != r.end:
        raise ValueError(f"{what}: layout is not as documented ({r.end - r.pos} bytes left)")


# ---- section walkers ----------------------------------------------------------------

CONFIG_INTS = ["vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
               "max_position", "type_vocab_size"]

# One tagged record: tag (Str), type (Field), value (Field, or Str for strings), end.
Record = namedtuple("Record", "start tag type value end")


def _records(r):
    """(count Field, {tag: Record}, end position) of a record list."""
    count = r.get("<I")
    recs = {}
    for _ in range(count.value):
        start = r.pos
        tag = r.get_str()
        typ = r.get("<B")
        if typ.value == STR:
            val = r.get_str()
        elif typ.value in RECORD_FMT:
            val = r.get(RECORD_FMT[typ.value])
        else:
            raise ValueError(f"record '{tag.text}' has unknown type {typ.value}")
        recs[tag.text] = Record(start, tag, typ, val, r.pos)
    return count, recs, r.pos


def walk_config(buf):
    """dict: field name -> its value (Field, or Str for architecture, hidden_act, source,
    default_pool); plus "_count" (Field), "_records" ({name: Record}) and "_end"."""
    r = _reader(buf, CONFIG)
    count, recs, end = _records(r)
    _done(r, "config")
    c = {k: rec.value for k, rec in recs.items()}
    c.update(_count=count, _records=recs, _end=end)
    return c


def walk_tokenizer(buf):
    """dict of Fields/Strs: `kind` (Str), then, for "wordpiece", the fields as
    WordPieceTokenizer::serialize writes them; `vocab` is a list of Str (index = token id),
    `added` a list of dicts (id, flags, content)."""
    r = _reader(buf, TOKENIZER)
    t = {"kind": r.get_str()}
    t.update({"magic": r.get("<I"), "version": r.get("<I"), "flags": r.get("<B"),
              "max_input_chars_per_word": r.get("<i"), "continuing_prefix": r.get_str(),
              "unk_token": r.get_str(), "cls_token": r.get_str(), "sep_token": r.get_str(),
              "pad_token": r.get_str(), "vocab_count": r.get("<I")})
    t["vocab"] = [r.get_str() for _ in range(t["vocab_count"].value)]
    t["added_count"] = r.get("<I")
    t["added"] = [{"id": r.get("<i"), "flags": r.get("<B"), "content": r.get_str()}
                  for _ in range(t["added_count"].value)]
    _done(r, "tokenizer")
    return t


OP_FIELDS = [("in0", "<i"), ("in1", "<i"), ("out", "<i")]
# The attributes a writer stores (only when they differ from the default in runtime/ir.h).
OP_ATTRS = {"act": STR, "precision": STR, "act_scale": F32, "act_zp": I64, "num_heads": I64,
            "eps": F32, "scale": F32, "pool": STR, "block_sparsity": F32}


def walk_graph(buf):
    """dict: value_count, values [{name, width, rows}], op_count, ops [{start, end, kind,
    name, in0, in1, out, nslots, w (nslots Fields), attr_count, attrs ({tag: Record}), and
    each present attribute's value under its tag}], output, output_count,
    outputs [{name, value}], end."""
    r = _reader(buf, GRAPH)
    g = {"value_count": r.get("<I")}
    g["values"] = [{"name": r.get_str(), "width": r.get("<q"), "rows": r.get("<I")}
                   for _ in range(g["value_count"].value)]
    g["op_count"] = r.get("<I")
    ops = []
    for _ in range(g["op_count"].value):
        op = {"start": r.pos, "kind": r.get("<I"), "name": r.get_str()}
        for k, fmt in OP_FIELDS:
            op[k] = r.get(fmt)
        op["nslots"] = r.get("<I")
        op["w"] = [r.get("<i") for _ in range(op["nslots"].value)]
        op["attr_count"], op["attrs"], op["end"] = _records(r)
        for tag, rec in op["attrs"].items():
            op[tag] = rec.value
        ops.append(op)
    g["ops"] = ops
    g["output"] = r.get("<i")
    g["output_count"] = r.get("<I")
    g["outputs"] = [{"name": r.get_str(), "value": r.get("<i")}
                    for _ in range(g["output_count"].value)]
    g["end"] = r.pos
    _done(r, "graph")
    return g


class TensorEntry(namedtuple("TensorEntry", "start name dtype ndim shape offset nbytes checksum")):
    """One tensor table entry; every member but `start` is a Field or Str."""


def walk_tensors(buf):
    """List of TensorEntry; the table's count is at the section start (tensor_count_field)."""
    r = _reader(buf, TENSORS)
    count = r.get("<I")
    out = []
    for _ in range(count.value):
        start = r.pos
        name = r.get_str()
        dtype = r.get("<I")
        ndim = r.get("<Q")
        shape = [r.get("<q") for _ in range(ndim.value)]
        out.append(TensorEntry(start, name, dtype, ndim, shape, r.get("<Q"), r.get("<Q"),
                               r.get("<Q")))
    _done(r, "tensor table")
    return out


def tensor_count_field(buf):
    return _reader(buf, TENSORS).get("<I")


# ---- re-laying the file out ---------------------------------------------------------------

def pack_str(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack("<I", len(b)) + b


def section_bytes(buf, section):
    h = read_header(buf)
    return bytes(buf[h["offsets"][section]:h["offsets"][section] + h["sizes"][section]])


def assemble(sections, data, version=VERSION):
    """A whole file from the four metadata sections and the data section, laid out as
    SpnlWriter::write does (sections back to back, data 64-byte aligned), with a
    valid meta_checksum. Blob checksums are in the tensor table and are not touched."""
    offsets, sizes, at = [], [], HEADER_SIZE
    for s in sections:
        offsets.append(at)
        sizes.append(len(s))
        at += len(s)
    data_at = (at + ALIGN - 1) // ALIGN * ALIGN
    offsets.append(data_at)
    sizes.append(len(data))
    buf = bytearray(data_at + len(data))
    write_header(buf, dict(magic=MAGIC, version=version, endian=ENDIAN_TAG, size=len(buf),
                           offsets=offsets, sizes=sizes, checksum=0, reserved=bytes(16)))
    pos = HEADER_SIZE
    for s in sections:
        buf[pos:pos + len(s)] = s
        pos += len(s)
    buf[data_at:] = data
    return reseal(buf)


def splice(buf, start, end, new):
    """Replaces buf[start:end] (inside one metadata section) by `new` and re-lays the
    file out: section offsets and sizes follow, the data section is copied as is (tensor
    offsets are relative to it), and the meta checksum is recomputed."""
    h = read_header(buf)
    secs = [bytearray(section_bytes(buf, s)) for s in range(DATA)]
    for s in range(DATA):
        lo, hi = h["offsets"][s], h["offsets"][s] + h["sizes"][s]
        if lo <= start and end <= hi:
            secs[s][start - lo:end - lo] = new
            break
    else:
        raise ValueError(f"[{start}, {end}) is not inside one metadata section")
    return assemble([bytes(s) for s in secs], section_bytes(buf, DATA), version=h["version"])


def record(tag, typ, value):
    """A tagged record's bytes; value is an int, float, str or bool by `typ`."""
    b = pack_str(tag) + struct.pack("<B", typ)
    if typ == STR:
        return b + pack_str(value)
    return b + struct.pack(RECORD_FMT[typ], value)


def add_op_attr(buf, op_index, tag, typ, value, count_delta=1):
    """A copy with a record appended to op `op_index`'s attributes (its count + count_delta)."""
    op = walk_graph(buf)["ops"][op_index]
    b = bytearray(buf)
    poke(b, op["attr_count"], op["attr_count"].value + count_delta)
    return splice(b, op["end"], op["end"], record(tag, typ, value))


def add_config_field(buf, tag, typ, value):
    cfg = walk_config(buf)
    b = bytearray(buf)
    poke(b, cfg["_count"], cfg["_count"].value + 1)
    return splice(b, cfg["_end"], cfg["_end"], record(tag, typ, value))


def set_op_slots(buf, op_index, slots):
    """A copy with op `op_index`'s weight slot list replaced."""
    op = walk_graph(buf)["ops"][op_index]
    new = struct.pack("<I", len(slots)) + b"".join(struct.pack("<i", v) for v in slots)
    return splice(buf, op["nslots"].at, op["attr_count"].at, new)


def check_layout(data):
    """Asserts that a file's layout is as documented here (used on the valid input)."""
    data = bytes(data)
    h = read_header(data)
    assert h["magic"] == MAGIC, h["magic"]
    assert h["version"] == VERSION, f"format version {h['version']}, this module knows {VERSION}"
    assert h["endian"] == ENDIAN_TAG and h["size"] == len(data)
    assert h["offsets"][CONFIG] == HEADER_SIZE
    for s in range(DATA):  # in order, without overlap
        assert h["offsets"][s] + h["sizes"][s] <= h["offsets"][s + 1], SECTIONS[s]
    assert h["offsets"][DATA] % ALIGN == 0
    assert h["offsets"][DATA] + h["sizes"][DATA] == len(data)
    assert h["checksum"] == meta_checksum(data), "meta_checksum differs from XXH3-64 as documented"
    walk_config(data)
    walk_tokenizer(data)
    walk_graph(data)
    ents = walk_tensors(data)
    base, end = h["offsets"][DATA], 0
    for e in ents:
        o, n = e.offset.value, e.nbytes.value
        assert o % ALIGN == 0 and o >= end, e.name.text
        assert xxh3(data[base + o:base + o + n]) == e.checksum.value, f"blob checksum of {e.name.text}"
        end = o + n
    return h

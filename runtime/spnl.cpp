#include "runtime/spnl.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <type_traits>

#include "models/registry.h"
#include "runtime/bytes.h"
#include "runtime/error.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/tokenizer/sentencepiece.h"
#include "runtime/tokenizer/wordpiece.h"
#include "runtime/util/file_io.h"

namespace spinel {
namespace {

enum Section { kConfig = 0, kTokenizer, kGraph, kTensors, kData, kNumSections };
const char* const kSectionNames[kNumSections] = {"config", "tokenizer", "graph", "tensor table",
                                                 "data"};

// Fixed-size header at offset 0.
struct Header {
  char magic[8];
  uint32_t version;
  uint32_t endian;
  uint64_t file_size;
  uint64_t offset[kNumSections];
  uint64_t size[kNumSections];
  // XXH3-64 of this header (with this field 0) and of every byte from the
  // end of the header to the data section: config, tokenizer, graph, tensor
  // table and padding. Each weight blob has its own in the tensor table.
  uint64_t meta_checksum;
  uint8_t reserved[128 - 32 - 16 * kNumSections];
};
static_assert(sizeof(Header) == 128, "header layout");

// A Linear's input scale multiplies its input before quantization: a 0,
// negative or non-finite value would silently drop or corrupt a channel.
// (Shapes and dtypes are validate_graph's.)
template <typename Data>
void check_input_scales(const Graph& g, const std::vector<TensorInfo>& tensors, const Data& data) {
  for (const Op& op : g.ops) {
    if (op.kind != OpKind::Linear || op.w[slot::kInScale] < 0) continue;
    const TensorInfo& t = tensors.at(static_cast<size_t>(op.w[slot::kInScale]));
    const auto* v = static_cast<const float*>(data(op.w[slot::kInScale]));
    for (int64_t k = 0; k < t.numel(); ++k)
      if (!(std::isfinite(v[k]) && v[k] > 0.f))
        fail("Linear '", op.name, "': input scale '", t.name, "' holds ", v[k], " at channel ", k,
             " (must be finite and > 0)");
  }
}

uint64_t meta_checksum(const Header& h, const uint8_t* meta, size_t meta_bytes) {
  Header zeroed = h;
  zeroed.meta_checksum = 0;
  XXH3_state_t* st = XXH3_createState();
  if (!st) throw std::bad_alloc();
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, &zeroed, sizeof zeroed);
  XXH3_64bits_update(st, meta, meta_bytes);
  const uint64_t d = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return d;
}

uint64_t align_up(uint64_t v) { return (v + kSpnlAlign - 1) / kSpnlAlign * kSpnlAlign; }

// ---- tagged records ------------------------------------------------------------
// Op attributes and config fields are records (str tag, u8 type, value), so a
// new attribute or config field is a new row in a table below, not a new
// format. A reader refuses a tag it does not know: the file then needs a
// newer spinel (skipping it could run a model wrongly).

enum class AttrType : uint8_t { I64 = 1, F32 = 2, Str = 3, Bool = 4 };

const char* attr_type_name(uint8_t t) {
  switch (t) {
    case 1: return "i64";
    case 2: return "f32";
    case 3: return "str";
    case 4: return "bool";
  }
  return nullptr;
}

struct AttrValue {
  AttrType type = AttrType::I64;
  int64_t i = 0;
  float f = 0.f;
  std::string s;
  bool b = false;

  static AttrValue of_i64(int64_t v) { AttrValue a; a.type = AttrType::I64; a.i = v; return a; }
  static AttrValue of_f32(float v) { AttrValue a; a.type = AttrType::F32; a.f = v; return a; }
  static AttrValue of_str(std::string v) { AttrValue a; a.type = AttrType::Str; a.s = std::move(v); return a; }
  static AttrValue of_bool(bool v) { AttrValue a; a.type = AttrType::Bool; a.b = v; return a; }
  bool operator==(const AttrValue& o) const {
    if (type != o.type) return false;
    switch (type) {
      case AttrType::I64: return i == o.i;
      case AttrType::F32: return std::memcmp(&f, &o.f, sizeof f) == 0;  // bitwise: NaN is not a default
      case AttrType::Str: return s == o.s;
      case AttrType::Bool: return b == o.b;
    }
    return false;
  }
};

void put_record(ByteWriter& w, const char* tag, const AttrValue& v) {
  w.put_str(tag);
  w.put<uint8_t>(static_cast<uint8_t>(v.type));
  switch (v.type) {
    case AttrType::I64: w.put<int64_t>(v.i); break;
    case AttrType::F32: w.put<float>(v.f); break;
    case AttrType::Str: w.put_str(v.s); break;
    case AttrType::Bool: w.put<uint8_t>(v.b ? 1 : 0); break;
  }
}

// Reads the value of a record whose tag is known to want `want`.
AttrValue get_value(ByteReader& r, const char* what, const std::string& tag, uint8_t type,
                    AttrType want) {
  if (type != static_cast<uint8_t>(want)) {
    const char* got = attr_type_name(type);
    fail(what, " '", tag, "' has type ", got ? got : ("code " + std::to_string(type)), ", expected ",
         attr_type_name(static_cast<uint8_t>(want)));
  }
  switch (want) {
    case AttrType::I64: return AttrValue::of_i64(r.get<int64_t>(tag.c_str()));
    case AttrType::F32: return AttrValue::of_f32(r.get<float>(tag.c_str()));
    case AttrType::Str: return AttrValue::of_str(r.get_str(tag.c_str()));
    case AttrType::Bool: {
      const uint8_t b = r.get<uint8_t>(tag.c_str());
      if (b > 1) fail(what, " '", tag, "' is a bool stored as ", int{b});
      return AttrValue::of_bool(b == 1);
    }
  }
  fail(what, " '", tag, "': bad type");
}

template <typename E, size_t N>
E parse_enum(const E (&all)[N], const char* (*name)(E), const std::string& s, const char* what) {
  std::string known;
  for (E e : all) {
    if (s == name(e)) return e;
    known += (known.empty() ? "" : ", ") + std::string(name(e));
  }
  fail(what, " '", s, "' is not known to this spinel (it knows ", known,
       "); the file needs a newer spinel");
}

constexpr Activation kActivations[] = {Activation::None, Activation::GeluErf, Activation::GeluTanh,
                                       Activation::Tanh};
constexpr Precision kPrecisions[] = {Precision::F32, Precision::S8Dense, Precision::S8Sparse};
constexpr PoolKind kPoolKinds[] = {PoolKind::Cls, PoolKind::Mean};
constexpr Gate kGates[] = {Gate::None, Gate::Geglu};

int32_t to_i32(int64_t v, const char* what) {
  if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
    fail(what, " ", v, " is out of range");
  return static_cast<int32_t>(v);
}

constexpr uint32_t kind_bit(OpKind k) { return 1u << static_cast<uint32_t>(k); }
constexpr uint32_t kLinearOnly = kind_bit(OpKind::Linear);

// Every op attribute: its tag, type, the op kinds it belongs to, and how it
// maps to Op. Absent from a file = the default of Op in runtime/ir.h; the
// writer stores only values that differ from it.
struct OpAttrDef {
  const char* tag;
  AttrType type;
  uint32_t kinds;
  AttrValue (*get)(const Op&);
  void (*set)(Op&, const AttrValue&);
};

const OpAttrDef kOpAttrs[] = {
    {"act", AttrType::Str, kLinearOnly,
     [](const Op& o) { return AttrValue::of_str(activation_name(o.act)); },
     [](Op& o, const AttrValue& v) { o.act = parse_enum(kActivations, activation_name, v.s, "activation"); }},
    {"precision", AttrType::Str, kLinearOnly,
     [](const Op& o) { return AttrValue::of_str(precision_name(o.precision)); },
     [](Op& o, const AttrValue& v) { o.precision = parse_enum(kPrecisions, precision_name, v.s, "precision"); }},
    {"act_scale", AttrType::F32, kLinearOnly, [](const Op& o) { return AttrValue::of_f32(o.act_scale); },
     [](Op& o, const AttrValue& v) { o.act_scale = v.f; }},
    {"act_zp", AttrType::I64, kLinearOnly, [](const Op& o) { return AttrValue::of_i64(o.act_zp); },
     [](Op& o, const AttrValue& v) { o.act_zp = to_i32(v.i, "act_zp"); }},
    {"num_heads", AttrType::I64, kind_bit(OpKind::Attention),
     [](const Op& o) { return AttrValue::of_i64(o.num_heads); },
     [](Op& o, const AttrValue& v) { o.num_heads = to_i32(v.i, "num_heads"); }},
    {"eps", AttrType::F32, kind_bit(OpKind::LayerNorm) | kind_bit(OpKind::Embedding),
     [](const Op& o) { return AttrValue::of_f32(o.eps); }, [](Op& o, const AttrValue& v) { o.eps = v.f; }},
    {"scale", AttrType::F32, kind_bit(OpKind::Attention),
     [](const Op& o) { return AttrValue::of_f32(o.scale); }, [](Op& o, const AttrValue& v) { o.scale = v.f; }},
    {"pool", AttrType::Str, kind_bit(OpKind::Pool),
     [](const Op& o) { return AttrValue::of_str(pool_kind_name(o.pool)); },
     [](Op& o, const AttrValue& v) { o.pool = parse_enum(kPoolKinds, pool_kind_name, v.s, "pooling"); }},
    {"gate", AttrType::Str, kLinearOnly, [](const Op& o) { return AttrValue::of_str(gate_name(o.gate)); },
     [](Op& o, const AttrValue& v) { o.gate = parse_enum(kGates, gate_name, v.s, "gate"); }},
    {"alibi", AttrType::Bool, kind_bit(OpKind::Attention), [](const Op& o) { return AttrValue::of_bool(o.alibi); },
     [](Op& o, const AttrValue& v) { o.alibi = v.b; }},
    {"block_sparsity", AttrType::F32, kLinearOnly,
     [](const Op& o) { return AttrValue::of_f32(o.block_sparsity); },
     [](Op& o, const AttrValue& v) { o.block_sparsity = v.f; }},
};
constexpr size_t kNumOpAttrs = sizeof kOpAttrs / sizeof kOpAttrs[0];
static_assert(kNumOpAttrs <= 64, "seen-mask width");

// Config fields, the same way; `required` ones have no meaningful default.
struct ConfigFieldDef {
  const char* tag;
  AttrType type;
  bool required;
  AttrValue (*get)(const ModelConfig&);
  void (*set)(ModelConfig&, const AttrValue&);
};

#define SPINEL_CONFIG_I64(name, req)                                                    \
  {#name, AttrType::I64, req, [](const ModelConfig& c) { return AttrValue::of_i64(c.name); }, \
   [](ModelConfig& c, const AttrValue& v) { c.name = v.i; }}
const ConfigFieldDef kConfigFields[] = {
    {"architecture", AttrType::Str, true, [](const ModelConfig& c) { return AttrValue::of_str(c.architecture); },
     [](ModelConfig& c, const AttrValue& v) { c.architecture = v.s; }},
    SPINEL_CONFIG_I64(vocab_size, true),
    SPINEL_CONFIG_I64(hidden_size, true),
    SPINEL_CONFIG_I64(num_layers, true),
    SPINEL_CONFIG_I64(num_heads, true),
    SPINEL_CONFIG_I64(intermediate_size, true),
    SPINEL_CONFIG_I64(max_position, true),
    SPINEL_CONFIG_I64(type_vocab_size, false),
    {"layer_norm_eps", AttrType::F32, false,
     [](const ModelConfig& c) { return AttrValue::of_f32(c.layer_norm_eps); },
     [](ModelConfig& c, const AttrValue& v) { c.layer_norm_eps = v.f; }},
    {"hidden_act", AttrType::Str, false,
     [](const ModelConfig& c) { return AttrValue::of_str(activation_name(c.hidden_act)); },
     [](ModelConfig& c, const AttrValue& v) {
       c.hidden_act = parse_enum(kActivations, activation_name, v.s, "hidden_act");
     }},
    {"source", AttrType::Str, false, [](const ModelConfig& c) { return AttrValue::of_str(c.source); },
     [](ModelConfig& c, const AttrValue& v) { c.source = v.s; }},
    {"default_pool", AttrType::Str, false,
     [](const ModelConfig& c) { return AttrValue::of_str(c.default_pool); },
     [](ModelConfig& c, const AttrValue& v) { c.default_pool = v.s; }},
    {"normalize", AttrType::Bool, false, [](const ModelConfig& c) { return AttrValue::of_bool(c.normalize); },
     [](ModelConfig& c, const AttrValue& v) { c.normalize = v.b; }},
};
#undef SPINEL_CONFIG_I64
constexpr size_t kNumConfigFields = sizeof kConfigFields / sizeof kConfigFields[0];
static_assert(kNumConfigFields <= 64, "seen-mask width");

// Smallest record: empty tag (4), type (1), a bool (1).
constexpr size_t kMinRecordBytes = 6;

// Reads `count` records, calling apply(index into defs, value) once per tag;
// an unknown or repeated tag is an error naming it.
template <typename Def, size_t N, typename Apply>
void read_records(ByteReader& r, const Def (&defs)[N], const char* what, Apply apply) {
  const uint32_t n = r.get<uint32_t>(what);
  if (n > r.remaining() / kMinRecordBytes) fail(what, " count ", n, " exceeds the section");
  uint64_t seen = 0;
  for (uint32_t k = 0; k < n; ++k) {
    const std::string tag = r.get_str(what);
    const uint8_t type = r.get<uint8_t>(what);
    size_t d = 0;
    while (d < N && tag != defs[d].tag) ++d;
    if (d == N)
      fail(what, " '", tag, "' is not known to this spinel: the file was written by a newer spinel, "
           "which is needed to run it");
    if (seen & (uint64_t{1} << d)) fail(what, " '", tag, "' appears twice");
    seen |= uint64_t{1} << d;
    apply(d, get_value(r, what, tag, type, defs[d].type));
  }
  for (size_t d = 0; d < N; ++d)
    if constexpr (std::is_same_v<Def, ConfigFieldDef>)
      if (defs[d].required && !(seen & (uint64_t{1} << d))) fail(what, " '", defs[d].tag, "' is missing");
}

// ---- config ---------------------------------------------------------------------

void check_architecture(const std::string& a) {
  if (!models::find_family(a))
    fail("architecture '", a, "' is not supported by this spinel (supported: ", models::family_names(),
         ")");
}

void write_config(ByteWriter& w, const ModelConfig& c) {
  w.put<uint32_t>(static_cast<uint32_t>(kNumConfigFields));  // all of them, defaults too
  for (const ConfigFieldDef& f : kConfigFields) put_record(w, f.tag, f.get(c));
}

ModelConfig read_config(ByteReader& r) {
  ModelConfig c;
  read_records(r, kConfigFields, "config field",
               [&](size_t d, const AttrValue& v) { kConfigFields[d].set(c, v); });
  check_architecture(c.architecture);
  validate_config(c);
  return c;
}

// ---- tokenizer --------------------------------------------------------------------
// The section is a kind tag, then that kind's own serialization. A new kind
// is a new row here.

struct TokenizerKind {
  const char* tag;
  AnyTokenizer (*read)(ByteReader& r);
};
const TokenizerKind kTokenizerKinds[] = {
    {"wordpiece", [](ByteReader& r) { return AnyTokenizer(WordPieceTokenizer::deserialize(r)); }},
    {"bpe", [](ByteReader& r) { return AnyTokenizer(BpeTokenizer::deserialize(r)); }},
    {"sentencepiece",
     [](ByteReader& r) { return AnyTokenizer(SentencePieceTokenizer::deserialize(r)); }},
};

std::string tokenizer_kind_names() {
  std::string s;
  for (const auto& k : kTokenizerKinds) s += (s.empty() ? "" : ", ") + std::string(k.tag);
  return s;
}

const TokenizerKind* find_tokenizer_kind(const std::string& tag) {
  for (const auto& k : kTokenizerKinds)
    if (tag == k.tag) return &k;
  return nullptr;
}

// ---- graph --------------------------------------------------------------------------

void write_graph(ByteWriter& w, const Graph& g) {
  w.put<uint32_t>(static_cast<uint32_t>(g.values.size()));
  for (const Value& v : g.values) {
    w.put_str(v.name);
    w.put<int64_t>(v.width);
    w.put<uint32_t>(static_cast<uint32_t>(v.rows));
  }
  const Op defaults;
  w.put<uint32_t>(static_cast<uint32_t>(g.ops.size()));
  for (const Op& op : g.ops) {
    w.put<uint32_t>(static_cast<uint32_t>(op.kind));
    w.put_str(op.name);
    w.put<int32_t>(op.in0);
    w.put<int32_t>(op.in1);
    w.put<int32_t>(op.out);
    // Weight slots up to the last one used (a reader knowing fewer slots can
    // still read ops that do not use the new ones).
    uint32_t nslots = slot::kCount;
    while (nslots > 0 && op.w[nslots - 1] == -1) --nslots;
    w.put<uint32_t>(nslots);
    for (uint32_t k = 0; k < nslots; ++k) w.put<int32_t>(op.w[k]);
    std::vector<const OpAttrDef*> set;
    for (const OpAttrDef& a : kOpAttrs) {
      if (a.get(op) == a.get(defaults)) continue;
      if (!(a.kinds & kind_bit(op.kind)))
        fail("graph op '", op.name, "': attribute '", a.tag, "' is set but does not apply to a ",
             op_kind_name(op.kind));
      set.push_back(&a);
    }
    w.put<uint32_t>(static_cast<uint32_t>(set.size()));
    for (const OpAttrDef* a : set) put_record(w, a->tag, a->get(op));
  }
  w.put<int32_t>(g.output);
  w.put<uint32_t>(static_cast<uint32_t>(g.outputs.size()));
  for (const GraphOutput& o : g.outputs) {
    w.put_str(o.name);
    w.put<int32_t>(o.value);
  }
}

void read_op(ByteReader& r, Op& op) {
  op.name = r.get_str("op name");
  op.in0 = r.get<int32_t>("op in0");
  op.in1 = r.get<int32_t>("op in1");
  op.out = r.get<int32_t>("op out");
  const uint32_t nslots = r.get<uint32_t>("op weight slot count");
  if (nslots > static_cast<uint32_t>(slot::kCount))
    fail(nslots, " weight slots, this spinel knows ", slot::kCount,
         ": the file was written by a newer spinel, which is needed to run it");
  for (uint32_t k = 0; k < nslots; ++k) op.w[k] = r.get<int32_t>("op weight");
  read_records(r, kOpAttrs, "attribute", [&](size_t d, const AttrValue& v) {
    if (!(kOpAttrs[d].kinds & kind_bit(op.kind)))
      fail("attribute '", kOpAttrs[d].tag, "' does not apply to a ", op_kind_name(op.kind));
    kOpAttrs[d].set(op, v);
  });
}

Graph read_graph(ByteReader& r) {
  Graph g;
  const uint32_t nv = r.get<uint32_t>("value count");
  // Each value takes at least 16 bytes; reject counts the section cannot hold.
  if (nv > r.remaining() / 16) fail("graph: value count ", nv, " exceeds the section");
  g.values.resize(nv);
  for (Value& v : g.values) {
    v.name = r.get_str("value name");
    v.width = r.get<int64_t>("value width");
    if (v.width <= 0 || v.width > (int64_t{1} << 24))
      fail("graph: value '", v.name, "' has width ", v.width);
    const uint32_t rows = r.get<uint32_t>("value rows");
    if (rows > static_cast<uint32_t>(Rows::Sequences))
      fail("graph: value '", v.name, "' has unknown row kind ", rows);
    v.rows = static_cast<Rows>(rows);
  }
  const uint32_t nops = r.get<uint32_t>("op count");
  // kind, name, in0, in1, out, slot count, attribute count: at least 28 bytes.
  if (nops > r.remaining() / 28) fail("graph: op count ", nops, " exceeds the section");
  g.ops.resize(nops);
  for (size_t i = 0; i < g.ops.size(); ++i) {
    Op& op = g.ops[i];
    const uint32_t kind = r.get<uint32_t>("op kind");
    if (kind < 1 || kind >= kNumOpKinds)
      fail("graph op #", i, ": op kind ", kind,
           " is not known to this spinel (a newer spinel is needed, or the file is damaged)");
    op.kind = static_cast<OpKind>(kind);
    try {
      read_op(r, op);
    } catch (const Error& e) {
      fail("graph op #", i, " (", op_kind_name(op.kind), " '", op.name, "'): ", e.what());
    }
  }
  g.output = r.get<int32_t>("graph output");
  const uint32_t no = r.get<uint32_t>("named output count");
  if (no > r.remaining() / 8) fail("graph: named output count ", no, " exceeds the section");
  g.outputs.resize(no);
  for (GraphOutput& o : g.outputs) {
    o.name = r.get_str("output name");
    o.value = r.get<int32_t>("output value");
  }
  return g;
}

void write_tensors(ByteWriter& w, const std::vector<TensorInfo>& ts) {
  w.put<uint32_t>(static_cast<uint32_t>(ts.size()));
  for (const TensorInfo& t : ts) {
    w.put_str(t.name);
    w.put<uint32_t>(static_cast<uint32_t>(t.dtype));
    w.put_vec(t.shape);
    w.put<uint64_t>(t.offset);
    w.put<uint64_t>(t.nbytes);
    w.put<uint64_t>(t.checksum);
  }
}

std::vector<TensorInfo> read_tensors(ByteReader& r, uint64_t data_size) {
  const uint32_t n = r.get<uint32_t>("tensor count");
  if (n > r.remaining() / 40) fail("tensor table: count ", n, " exceeds the section");
  std::vector<TensorInfo> ts(n);
  uint64_t end = 0;  // blobs lie in table order, without overlap
  for (TensorInfo& t : ts) {
    t.name = r.get_str("tensor name");
    const uint32_t dt = r.get<uint32_t>("tensor dtype");
    if (dt < 1 || dt > static_cast<uint32_t>(DType::I64))
      fail("tensor '", t.name, "': unknown dtype code ", dt);
    t.dtype = static_cast<DType>(dt);
    t.shape = r.get_vec<int64_t>("tensor shape");
    if (t.shape.size() > 8) fail("tensor '", t.name, "': ", t.shape.size(), " dimensions");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0 || static_cast<uint64_t>(d) > data_size)
        fail("tensor '", t.name, "': dimension ", d, " is out of range");
      if (d != 0 && numel > data_size / static_cast<uint64_t>(d))
        fail("tensor '", t.name, "': shape is larger than the data section");
      numel *= static_cast<uint64_t>(d);
    }
    t.offset = r.get<uint64_t>("tensor offset");
    t.nbytes = r.get<uint64_t>("tensor nbytes");
    t.checksum = r.get<uint64_t>("tensor checksum");
    if (t.nbytes != numel * dtype_size(t.dtype))
      fail("tensor '", t.name, "': ", t.nbytes, " bytes do not match its shape and dtype");
    if (t.offset % kSpnlAlign != 0)
      fail("tensor '", t.name, "': offset ", t.offset, " is not ", kSpnlAlign, "-byte aligned");
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail("tensor '", t.name, "': bytes [", t.offset, ", +", t.nbytes,
           ") lie outside the data section of ", data_size, " bytes");
    if (t.offset < end)
      fail("tensor '", t.name, "': offset ", t.offset, " overlaps the previous tensor, which ends at ",
           end);
    end = t.offset + t.nbytes;
  }
  return ts;
}

void check_fully_read(const ByteReader& r) {
  if (r.remaining() != 0) fail(r.what(), ": ", r.remaining(), " unexpected trailing bytes");
}

}  // namespace

int32_t SpnlWriter::add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                               const void* data, size_t nbytes) {
  TensorInfo t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.nbytes = nbytes;
  if (static_cast<uint64_t>(t.numel()) * dtype_size(dtype) != nbytes)
    fail("tensor '", name, "': ", nbytes, " bytes do not match its shape");
  tensors_.push_back(t);
  const auto* p = static_cast<const uint8_t*>(data);
  blobs_.emplace_back(p, p + nbytes);
  return static_cast<int32_t>(tensors_.size() - 1);
}

void SpnlWriter::set_tensor(int32_t idx, DType dtype, std::vector<int64_t> shape, const void* data,
                            size_t nbytes) {
  TensorInfo& t = tensors_.at(static_cast<size_t>(idx));
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.nbytes = nbytes;
  if (static_cast<uint64_t>(t.numel()) * dtype_size(dtype) != nbytes)
    fail("tensor '", t.name, "': ", nbytes, " bytes do not match its shape");
  const auto* p = static_cast<const uint8_t*>(data);
  blobs_[static_cast<size_t>(idx)].assign(p, p + nbytes);
}

namespace {

// Refuses to replace anything but a regular file (a device, a FIFO, a
// directory or a symlink named by -o is an error, not a target).
void check_destination(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return;
    fail("cannot write '", path, "': ", std::strerror(errno));
  }
  if (S_ISLNK(st.st_mode)) fail("'", path, "' is a symbolic link; refusing to replace it");
  if (!S_ISREG(st.st_mode)) fail("'", path, "' exists and is not a regular file; refusing to replace it");
}

// A new file beside `path` with an unpredictable name, created exclusively
// (O_EXCL: never an existing file or a planted symlink), permissions as a
// plain create would give.
int create_temp_beside(const std::string& path, std::string& tmp) {
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::string templ = dir + "." + base + ".tmp-XXXXXX";
  const int fd = mkostemp(templ.data(), O_CLOEXEC);
  if (fd < 0) fail("cannot create a temporary file beside '", path, "': ", std::strerror(errno));
  const mode_t mask = umask(0);
  umask(mask);
  fchmod(fd, 0666 & ~mask);
  tmp = templ;
  return fd;
}

void write_all(int fd, const void* data, size_t n, const std::string& tmp) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("error while writing '", tmp, "': ", std::strerror(w < 0 ? errno : ENOSPC));
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

void SpnlWriter::write(const std::string& path) const {
  check_architecture(config.architecture);
  validate_graph(graph, tensors_, config);
  check_input_scales(graph, tensors_, [this](int32_t i) { return tensor_data(i); });
  if (tokenizer.vocab_size() == 0) fail("no tokenizer was given to the .spnl writer");
  if (static_cast<int64_t>(tokenizer.vocab_size()) > config.vocab_size)
    fail("the tokenizer has ", tokenizer.vocab_size(), " tokens but the model's embedding table has ",
         config.vocab_size, " rows");
  check_destination(path);

  // Lay the blobs out back to back, each 64-byte aligned, with their checksums.
  std::vector<TensorInfo> tensors = tensors_;
  uint64_t end = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    TensorInfo& t = tensors[i];
    t.offset = align_up(end);
    t.checksum = XXH3_64bits(blobs_[i].data(), blobs_[i].size());
    end = t.offset + t.nbytes;
  }

  ByteWriter sec[kData];
  write_config(sec[kConfig], config);
  if (!find_tokenizer_kind(tokenizer.kind()))
    fail("the .spnl writer has no tokenizer kind '", tokenizer.kind(), "'");
  sec[kTokenizer].put_str(tokenizer.kind());
  tokenizer.serialize(sec[kTokenizer]);
  write_graph(sec[kGraph], graph);
  write_tensors(sec[kTensors], tensors);

  Header h{};
  std::memcpy(h.magic, kSpnlMagic, sizeof h.magic);
  h.version = kSpnlVersion;
  h.endian = kSpnlEndianTag;
  std::vector<uint8_t> meta;  // everything between the header and the data section
  for (int s = 0; s < kData; ++s) {
    h.offset[s] = sizeof(Header) + meta.size();
    h.size[s] = sec[s].bytes().size();
    meta.insert(meta.end(), sec[s].bytes().begin(), sec[s].bytes().end());
  }
  h.offset[kData] = align_up(sizeof(Header) + meta.size());
  meta.resize(h.offset[kData] - sizeof(Header), 0);
  h.size[kData] = end;
  h.file_size = h.offset[kData] + h.size[kData];
  h.meta_checksum = meta_checksum(h, meta.data(), meta.size());

  std::string tmp;
  int fd = create_temp_beside(path, tmp);
  try {
    static const uint8_t zeros[kSpnlAlign] = {};
    write_all(fd, &h, sizeof h, tmp);
    write_all(fd, meta.data(), meta.size(), tmp);
    uint64_t at = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      write_all(fd, zeros, tensors[i].offset - at, tmp);
      write_all(fd, blobs_[i].data(), blobs_[i].size(), tmp);
      at = tensors[i].offset + tensors[i].nbytes;
    }
    const int rc = ::close(fd);
    fd = -1;  // closed even when close() reports an error
    if (rc != 0) fail("error while writing '", tmp, "': ", std::strerror(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    fail("cannot move the new model to '", path, "': ", why);
  }
}

Model::~Model() {
  if (mapped_) munmap(const_cast<uint8_t*>(base_), size_);
  std::free(owned_);
}

const void* Model::tensor_data(int32_t idx) const {
  if (idx < 0 || static_cast<size_t>(idx) >= tensors_.size())
    fail("tensor index ", idx, " out of range (", tensors_.size(), " tensors)");
  return base_ + data_offset_ + tensors_[idx].offset;
}

void Model::verify_weights() const {
  for (const TensorInfo& t : tensors_) {
    const uint64_t got = XXH3_64bits(base_ + data_offset_ + t.offset, t.nbytes);
    if (got != t.checksum)
      fail("tensor '", t.name, "': checksum mismatch, its bytes are damaged");
  }
}

std::shared_ptr<const Model> Model::load(const std::string& path, const LoadOptions& opts) {
  std::shared_ptr<Model> m(new Model());
  m->path_ = path;
  {
    const RegularFile f(path, "model");
    m->size_ = f.size();
    if (m->size_ < sizeof(Header))
      fail("model '", path, "' is not a .spnl file: ", m->size_, " bytes is shorter than the header");
    void* p = mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, f.fd(), 0);
    if (p == MAP_FAILED) fail("cannot map model '", path, "': ", std::strerror(errno));
    m->base_ = static_cast<const uint8_t*>(p);
    m->mapped_ = true;
  }
  m->parse(opts);
  return m;
}

std::shared_ptr<const Model> Model::from_memory(const void* data, size_t size, const std::string& name,
                                                const LoadOptions& opts) {
  std::shared_ptr<Model> m(new Model());
  m->path_ = name;
  if (!data && size) fail("model '", name, "': null buffer");
  if (size < sizeof(Header))
    fail("model '", name, "' is not a .spnl file: ", size, " bytes is shorter than the header");
  // Weights are read in place: keep them 64-byte aligned, as in a mapping.
  if (size > SIZE_MAX - kSpnlAlign) throw std::bad_alloc();  // align_up would wrap
  m->owned_ = std::aligned_alloc(kSpnlAlign, align_up(size));
  if (!m->owned_) throw std::bad_alloc();
  std::memcpy(m->owned_, data, size);
  m->base_ = static_cast<const uint8_t*>(m->owned_);
  m->size_ = size;
  m->parse(opts);
  return m;
}

void Model::parse(const LoadOptions& opts) {
  try {
    Header h;
    std::memcpy(&h, base_, sizeof h);
    if (std::memcmp(h.magic, kSpnlMagic, sizeof h.magic) != 0) fail("not a .spnl file (bad magic)");
    if (h.endian != kSpnlEndianTag) fail("written on a machine of the other byte order");
    if (h.version == 1 || h.version == 2)
      fail("format version ", h.version, " was written by an older spinel; convert the ONNX model "
           "again with this spinel (it reads format ", kSpnlVersion, ")");
    if (h.version > kSpnlVersion)
      fail("format version ", h.version, " is newer than this spinel reads (format ", kSpnlVersion,
           "); a newer spinel is needed, or the file is damaged");
    if (h.version != kSpnlVersion)
      fail("format version ", h.version, " is not a .spnl format (this spinel reads format ",
           kSpnlVersion, ")");
    if (h.file_size != size_)
      fail("truncated or extended: the header says ", h.file_size, " bytes, the file has ", size_);
    for (int s = 0; s < kNumSections; ++s) {
      if (h.offset[s] < sizeof(Header) || h.offset[s] > size_ || h.size[s] > size_ - h.offset[s])
        fail("section '", kSectionNames[s], "' [", h.offset[s], ", +", h.size[s],
             ") lies outside the file of ", size_, " bytes");
    }
    if (h.offset[kData] % kSpnlAlign != 0) fail("data section is not ", kSpnlAlign, "-byte aligned");
    for (int s = 0; s < kData; ++s)
      if (h.offset[s] + h.size[s] > h.offset[kData])
        fail("section '", kSectionNames[s], "' reaches into the data section");
    if (meta_checksum(h, base_ + sizeof(Header), h.offset[kData] - sizeof(Header)) != h.meta_checksum)
      fail("checksum mismatch in the header or metadata: the file is damaged");
    version_ = h.version;
    data_offset_ = h.offset[kData];
    data_size_ = h.size[kData];

    auto reader = [&](Section s) {
      return ByteReader(base_ + h.offset[s], h.size[s], kSectionNames[s]);
    };
    ByteReader rc = reader(kConfig);
    config_ = read_config(rc);
    check_fully_read(rc);
    ByteReader rt = reader(kTokenizer);
    tokenizer_kind_ = rt.get_str("tokenizer kind");
    if (const TokenizerKind* k = find_tokenizer_kind(tokenizer_kind_))
      tokenizer_ = k->read(rt);
    else
      fail("tokenizer: kind '", tokenizer_kind_, "' is not supported by this spinel (supported: ",
           tokenizer_kind_names(), ")");
    check_fully_read(rt);
    ByteReader rg = reader(kGraph);
    graph_ = read_graph(rg);
    check_fully_read(rg);
    ByteReader rw = reader(kTensors);
    tensors_ = read_tensors(rw, data_size_);
    check_fully_read(rw);
    validate_graph(graph_, tensors_, config_);
    check_input_scales(graph_, tensors_, [this](int32_t i) { return tensor_data(i); });
    if (static_cast<int64_t>(tokenizer_.vocab_size()) > config_.vocab_size)
      fail("tokenizer has ", tokenizer_.vocab_size(), " tokens, more than the ", config_.vocab_size,
           " rows of the embedding table");
    if (opts.verify_weights) verify_weights();
  } catch (const Error& e) {
    fail("invalid model '", path_, "': ", e.what());
  }
}

}  // namespace spinel

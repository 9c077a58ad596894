// .spnl loading from memory and a short run of what loads.
//
// Every load failure must be a spinel::Error; anything else escaping, or a
// sanitizer report, is a finding. A model that loads runs one batch of two
// tiny sequences and then one of one sequence (arena reuse) on one thread.
//
// The load verifies an XXH3 checksum of the metadata and of every weight
// blob, so byte flips alone die at the checksum. The custom mutator below
// knows the format-3 layout: it walks the header, config, tokenizer, graph and
// tensor table, mutates their fields (counts, lengths, offsets, sizes, dims,
// op indices, record types, floats) to boundary values, reorders ops, adds
// tagged records (known, unknown and repeated tags) to ops and the config,
// mutates sections and
// blobs with libFuzzer's own mutator, and then usually reseals the checksums
// so that the mutated file reaches the validation behind them.
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "runtime/error.h"
#include "runtime/session.h"
#include "runtime/spnl.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

using Bytes = std::vector<uint8_t>;
using Rng = std::minstd_rand;

// ---- the format-3 layout (runtime/spnl.cpp) ---------------------------------

constexpr size_t kHeaderBytes = 128;
constexpr size_t kVersionAt = 8, kEndianAt = 12, kFileSizeAt = 16, kOffsetAt = 24, kSizeAt = 64,
                 kChecksumAt = 104;
constexpr int kConfig = 0, kTokenizer = 1, kGraph = 2, kTensors = 3, kData = 4, kSections = 5;
constexpr int kHeaderCat = 4;  // field category of the header (sections 0-3 are the others)
constexpr uint64_t kAlign = 64;

template <typename T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
void put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

enum class Kind : uint8_t { U8, U32, I32, U64, I64, F32 };

size_t width(Kind k) {
  switch (k) {
    case Kind::U8: return 1;
    case Kind::U32: case Kind::I32: case Kind::F32: return 4;
    default: return 8;
  }
}

struct Field {
  size_t at;  // absolute position in the file
  Kind kind;
};

struct TensorRecord {
  size_t dtype_at, ndim_at, offset_at, nbytes_at, checksum_at;
  uint64_t ndim;
};

struct OpRecord {
  size_t begin, end;  // absolute positions
  size_t attrs_at;    // its attribute count
};

// A tagged record list: where its count is and where it ends.
struct RecordList {
  size_t count_at = 0, end = 0;
};

// What the mutator knows about an input: where the sections lie and, as far
// as the bytes can be walked, where every number of the metadata is.
struct Layout {
  uint64_t off[kSections] = {}, size[kSections] = {};
  bool in_file[kSections] = {};
  bool sections_ok = false;  // every section in the file, metadata before data
  std::vector<Field> fields[5];  // by category: config, tokenizer, graph, tensors, header
  std::vector<TensorRecord> tensors;
  std::vector<OpRecord> ops;
  size_t op_count_at = 0;  // 0: the graph walk did not reach the op count
  RecordList config;       // count_at 0: not walked to its end
};

// Reads numbers from [pos, end) and records where each one was; stops (ok()
// false) at the first one that does not fit.
class Walker {
 public:
  Walker(const uint8_t* base, size_t begin, size_t end, std::vector<Field>& out)
      : base_(base), pos_(begin), end_(end), out_(out) {}
  bool ok() const { return ok_; }
  size_t pos() const { return pos_; }
  uint64_t num(Kind k) {
    const size_t n = width(k);
    if (!ok_ || end_ - pos_ < n) {
      ok_ = false;
      return 0;
    }
    out_.push_back({pos_, k});
    uint64_t v = 0;
    if (n == 1) v = base_[pos_];
    else if (n == 4) v = get<uint32_t>(base_ + pos_);
    else v = get<uint64_t>(base_ + pos_);
    pos_ += n;
    return v;
  }
  void skip(uint64_t n) {
    if (!ok_ || end_ - pos_ < n) ok_ = false;
    else pos_ += n;
  }
  void str() { skip(num(Kind::U32)); }
  void stop() { ok_ = false; }

 private:
  const uint8_t* base_;
  size_t pos_, end_;
  std::vector<Field>& out_;
  bool ok_ = true;
};

// u32 count, then (str tag, u8 type, value) records.
RecordList walk_records(Walker& w) {
  RecordList r;
  const size_t count_at = w.pos();
  const uint64_t n = w.num(Kind::U32);
  for (uint64_t i = 0; i < n && w.ok(); ++i) {
    w.str();  // tag
    switch (w.num(Kind::U8)) {
      case 1: w.num(Kind::I64); break;
      case 2: w.num(Kind::F32); break;
      case 3: w.str(); break;
      case 4: w.num(Kind::U8); break;
      default: w.stop();
    }
  }
  if (w.ok()) r = {count_at, w.pos()};
  return r;
}

void walk_config(Walker& w, Layout& l) { l.config = walk_records(w); }

void walk_tokenizer(Walker& w) {
  w.str();           // kind
  w.num(Kind::U32);  // magic
  w.num(Kind::U32);  // version
  w.num(Kind::U8);   // flags
  w.num(Kind::I32);  // max_input_chars_per_word
  for (int i = 0; i < 5; ++i) w.str();  // prefix, unk, cls, sep, pad
  const uint64_t n = w.num(Kind::U32);
  for (uint64_t i = 0; i < n && w.ok(); ++i) w.str();
  const uint64_t na = w.num(Kind::U32);
  for (uint64_t i = 0; i < na && w.ok(); ++i) {
    w.num(Kind::I32);  // id
    w.num(Kind::U8);   // flags
    w.str();
  }
}

void walk_graph(Walker& w, Layout& l) {
  const uint64_t nv = w.num(Kind::U32);
  for (uint64_t i = 0; i < nv && w.ok(); ++i) {
    w.str();
    w.num(Kind::I64);  // width
    w.num(Kind::U32);  // rows
  }
  if (!w.ok()) return;
  l.op_count_at = w.pos();
  const uint64_t nops = w.num(Kind::U32);
  for (uint64_t i = 0; i < nops && w.ok(); ++i) {
    const size_t begin = w.pos();
    w.num(Kind::U32);  // kind
    w.str();           // name
    for (int j = 0; j < 3; ++j) w.num(Kind::I32);  // in0, in1, out
    const uint64_t nslots = w.num(Kind::U32);
    for (uint64_t k = 0; k < nslots && w.ok(); ++k) w.num(Kind::I32);
    const size_t attrs_at = w.pos();
    walk_records(w);
    if (w.ok()) l.ops.push_back({begin, w.pos(), attrs_at});
  }
  w.num(Kind::I32);  // output (last_hidden_state)
  const uint64_t no = w.num(Kind::U32);
  for (uint64_t i = 0; i < no && w.ok(); ++i) {
    w.str();
    w.num(Kind::I32);
  }
}

void walk_tensors(Walker& w, Layout& l) {
  const uint64_t n = w.num(Kind::U32);
  for (uint64_t i = 0; i < n && w.ok(); ++i) {
    TensorRecord t{};
    w.str();
    t.dtype_at = w.pos();
    w.num(Kind::U32);
    t.ndim_at = w.pos();
    t.ndim = w.num(Kind::U64);
    for (uint64_t d = 0; d < t.ndim && w.ok(); ++d) w.num(Kind::I64);
    t.offset_at = w.pos();
    w.num(Kind::U64);
    t.nbytes_at = w.pos();
    w.num(Kind::U64);
    t.checksum_at = w.pos();
    w.num(Kind::U64);
    if (w.ok()) l.tensors.push_back(t);
  }
}

Layout walk(const uint8_t* f, size_t n) {
  Layout l;
  if (n < kHeaderBytes) return l;
  auto& h = l.fields[kHeaderCat];
  h.push_back({kVersionAt, Kind::U32});
  h.push_back({kEndianAt, Kind::U32});
  h.push_back({kFileSizeAt, Kind::U64});
  l.sections_ok = true;
  for (int s = 0; s < kSections; ++s) {
    h.push_back({kOffsetAt + 8 * size_t(s), Kind::U64});
    h.push_back({kSizeAt + 8 * size_t(s), Kind::U64});
    l.off[s] = get<uint64_t>(f + kOffsetAt + 8 * s);
    l.size[s] = get<uint64_t>(f + kSizeAt + 8 * s);
    l.in_file[s] = l.off[s] >= kHeaderBytes && l.off[s] <= n && l.size[s] <= n - l.off[s];
    l.sections_ok = l.sections_ok && l.in_file[s];
  }
  for (int s = 0; s < kData && l.sections_ok; ++s)
    l.sections_ok = l.off[s] + l.size[s] <= l.off[kData];
  for (int s = 0; s < kData; ++s) {
    if (!l.in_file[s]) continue;
    Walker w(f, l.off[s], l.off[s] + l.size[s], l.fields[s]);
    if (s == kConfig) walk_config(w, l);
    if (s == kTokenizer) walk_tokenizer(w);
    if (s == kGraph) walk_graph(w, l);
    if (s == kTensors) walk_tensors(w, l);
  }
  return l;
}

// The blob of table entry t, when it lies inside the data section.
bool blob_range(const Bytes& f, const Layout& l, const TensorRecord& t, size_t& at, size_t& n) {
  if (!l.in_file[kData]) return false;
  const uint64_t off = get<uint64_t>(f.data() + t.offset_at);
  const uint64_t nb = get<uint64_t>(f.data() + t.nbytes_at);
  if (off > l.size[kData] || nb > l.size[kData] - off) return false;
  at = l.off[kData] + off;
  n = nb;
  return true;
}

// Recomputes the blob checksums in the tensor table, then the metadata
// checksum over the header and everything up to the data section.
void reseal(Bytes& f, bool blobs, bool meta) {
  const Layout l = walk(f.data(), f.size());
  if (f.size() < kHeaderBytes) return;
  if (blobs) {
    for (const TensorRecord& t : l.tensors) {
      size_t at, n;
      if (blob_range(f, l, t, at, n)) put<uint64_t>(f.data() + t.checksum_at, XXH3_64bits(f.data() + at, n));
    }
  }
  const uint64_t data_off = get<uint64_t>(f.data() + kOffsetAt + 8 * kData);
  if (meta && data_off >= kHeaderBytes && data_off <= f.size()) {
    put<uint64_t>(f.data() + kChecksumAt, 0);
    XXH3_state_t* st = XXH3_createState();
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, f.data(), kHeaderBytes);
    XXH3_64bits_update(st, f.data() + kHeaderBytes, data_off - kHeaderBytes);
    put<uint64_t>(f.data() + kChecksumAt, XXH3_64bits_digest(st));
    XXH3_freeState(st);
  }
}

// Lays sections out again as the writer does (metadata back to back, data
// 64-byte aligned) and fixes the header's offsets, sizes and file size.
Bytes rebuild(const Bytes& f, const Bytes (&sec)[kSections]) {
  Bytes out(f.begin(), f.begin() + kHeaderBytes);
  for (int s = 0; s < kData; ++s) {
    put<uint64_t>(out.data() + kOffsetAt + 8 * s, out.size());
    put<uint64_t>(out.data() + kSizeAt + 8 * s, sec[s].size());
    out.insert(out.end(), sec[s].begin(), sec[s].end());
  }
  out.resize((out.size() + kAlign - 1) / kAlign * kAlign, 0);
  put<uint64_t>(out.data() + kOffsetAt + 8 * kData, out.size());
  put<uint64_t>(out.data() + kSizeAt + 8 * kData, sec[kData].size());
  out.insert(out.end(), sec[kData].begin(), sec[kData].end());
  put<uint64_t>(out.data() + kFileSizeAt, out.size());
  return out;
}

void split(const Bytes& f, const Layout& l, Bytes (&sec)[kSections]) {
  for (int s = 0; s < kSections; ++s)
    sec[s].assign(f.begin() + l.off[s], f.begin() + l.off[s] + l.size[s]);
}

// ---- values -----------------------------------------------------------------

uint64_t read_field(const Bytes& f, const Field& x) {
  switch (width(x.kind)) {
    case 1: return f[x.at];
    case 4: return get<uint32_t>(f.data() + x.at);
    default: return get<uint64_t>(f.data() + x.at);
  }
}

void write_field(Bytes& f, const Field& x, uint64_t v) {
  switch (width(x.kind)) {
    case 1: f[x.at] = static_cast<uint8_t>(v); break;
    case 4: put<uint32_t>(f.data() + x.at, static_cast<uint32_t>(v)); break;
    default: put<uint64_t>(f.data() + x.at, v);
  }
}

// Boundary values for a number that was `old` (sign-extended when signed).
uint64_t interesting_int(int64_t old, const Layout& l, size_t file_size, Rng& rng) {
  static const uint64_t kFixed[] = {0, 1, 2, 3, 4, 7, 8, 16, 63, 64, 65, 127, 128, 255, 256,
                                    1023, 1024, 4096, 65535, 65536, 0x7fffffffULL,
                                    0x80000000ULL, 0xffffffffULL, 1ULL << 32, 1ULL << 62,
                                    1ULL << 63, ~0ULL, 0x7fffffffffffffffULL};
  switch (rng() % 6) {
    case 0: case 1: return kFixed[rng() % (sizeof kFixed / sizeof kFixed[0])];
    case 2: {
      static const int64_t kDelta[] = {1, -1, 2, -2, 4, -4, 64, -64};
      return static_cast<uint64_t>(old) + static_cast<uint64_t>(kDelta[rng() % 8]);
    }
    case 3: {  // wrapping, as the field would
      const uint64_t u = static_cast<uint64_t>(old);
      const uint64_t v[] = {u * 2, static_cast<uint64_t>(old / 2), 0 - u, u * 3, u + 1000};
      return v[rng() % 5];
    }
    case 4: {  // a size or offset the file really has, give or take one
      const int s = static_cast<int>(rng() % kSections);
      const uint64_t v[] = {file_size, l.off[s], l.size[s], l.off[s] + l.size[s]};
      return v[rng() % 4] + static_cast<uint64_t>(static_cast<int64_t>(rng() % 3) - 1);
    }
    default: return (static_cast<uint64_t>(rng()) << 32) ^ rng();
  }
}

float interesting_float(float old, Rng& rng) {
  const float kFixed[] = {0.f, -0.f, 1.f, -1.f, 0.5f, 1e-12f, 1e-6f, 1e6f, 1e7f, 1e30f, 1e31f,
                          std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::denorm_min(),
                          std::numeric_limits<float>::quiet_NaN(),
                          -std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()};
  switch (rng() % 4) {
    case 0: return old * 2;
    case 1: return std::nextafter(old, rng() % 2 ? 1e38f : -1e38f);
    default: return kFixed[rng() % (sizeof kFixed / sizeof kFixed[0])];
  }
}

int64_t as_signed(uint64_t v, Kind k) {
  switch (k) {
    case Kind::I32: return static_cast<int32_t>(static_cast<uint32_t>(v));
    case Kind::I64: return static_cast<int64_t>(v);
    default: return static_cast<int64_t>(v);
  }
}

// ---- mutations --------------------------------------------------------------
// Each returns false when it does not apply to this input.

int pick_category(const Layout& l, Rng& rng) {
  int cats[5], n = 0;
  for (int c = 0; c < 5; ++c)
    if (!l.fields[c].empty()) cats[n++] = c;
  return n ? cats[rng() % n] : -1;
}

// One number of the header or metadata set to a boundary value.
bool mutate_field(Bytes& f, const Layout& l, Rng& rng) {
  const int c = pick_category(l, rng);
  if (c < 0) return false;
  const Field& x = l.fields[c][rng() % l.fields[c].size()];
  const uint64_t old = read_field(f, x);
  if (x.kind == Kind::F32) {
    float v;
    const uint32_t bits = static_cast<uint32_t>(old);
    std::memcpy(&v, &bits, 4);
    v = interesting_float(v, rng);
    uint32_t nb;
    std::memcpy(&nb, &v, 4);
    write_field(f, x, nb);
  } else if (x.kind == Kind::U8) {
    const uint8_t kFixed[] = {0, 1, 0x0f, 0x10, 0x1f, 0x20, 0x7f, 0x80, 0xff};
    write_field(f, x, rng() % 2 ? kFixed[rng() % 9] : old ^ (1u << (rng() % 8)));
  } else {
    write_field(f, x, interesting_int(as_signed(old, x.kind), l, f.size(), rng));
  }
  return true;
}

// One number copied from another of the same kind and category: op inputs
// from other ops' outputs, a tensor offset from another tensor, and so on.
bool copy_field(Bytes& f, const Layout& l, Rng& rng) {
  const int c = pick_category(l, rng);
  if (c < 0) return false;
  const auto& fs = l.fields[c];
  const Field& to = fs[rng() % fs.size()];
  for (int tries = 0; tries < 8; ++tries) {
    const Field& from = fs[rng() % fs.size()];
    if (from.kind == to.kind && from.at != to.at) {
      write_field(f, to, read_field(f, from));
      return true;
    }
  }
  return false;
}

// libFuzzer's byte-level mutator on one whole section, which may grow or
// shrink; the layout is rebuilt around it.
bool mutate_section(Bytes& f, const Layout& l, size_t max_size, Rng& rng) {
  if (!l.sections_ok) return false;
  Bytes sec[kSections];
  split(f, l, sec);
  const int s = static_cast<int>(rng() % kSections);
  Bytes& b = sec[s];
  const size_t others = f.size() - b.size() + kAlign;
  if (others >= max_size) return false;
  if (b.empty()) b.push_back(static_cast<uint8_t>(rng()));  // libFuzzer mutates non-empty data
  const size_t len = b.size();
  const size_t cap = std::min<size_t>(len + 256, max_size - others);
  if (cap < len) return false;
  b.resize(cap);
  b.resize(LLVMFuzzerMutate(b.data(), len, cap));
  Bytes out = rebuild(f, sec);
  if (out.size() > max_size) return false;
  f.swap(out);
  return true;
}

// A weight blob changed in place: bytes by libFuzzer, or special values
// (NaN, Inf, extremes) at a few element positions.
bool mutate_blob(Bytes& f, const Layout& l, Rng& rng) {
  if (l.tensors.empty()) return false;
  const TensorRecord& t = l.tensors[rng() % l.tensors.size()];
  size_t at, n;
  if (!blob_range(f, l, t, at, n) || n == 0) return false;
  if (rng() % 2) {
    LLVMFuzzerMutate(f.data() + at, n, n);  // may report a shorter size; the bytes stay
    return true;
  }
  const uint32_t dtype = get<uint32_t>(f.data() + t.dtype_at);
  const size_t esize = dtype == 2 || dtype == 4 ? 1 : dtype == 5 ? 8 : 4;
  const int count = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < count && n >= esize; ++i) {
    uint8_t* p = f.data() + at + (rng() % (n / esize)) * esize;
    if (dtype == 1) {
      put<float>(p, interesting_float(get<float>(p), rng));
    } else if (esize == 1) {
      const uint8_t kFixed[] = {0x00, 0x01, 0x7f, 0x80, 0x81, 0xff};
      *p = kFixed[rng() % 6];
    } else {
      const uint64_t v = interesting_int(0, l, f.size(), rng);
      std::memcpy(p, &v, esize);
    }
  }
  return true;
}

// Ops deleted, duplicated, swapped or moved (the op count follows), so that
// ordering and single-assignment checks see real op records.
bool mutate_ops(Bytes& f, const Layout& l, size_t max_size, Rng& rng) {
  if (!l.sections_ok || l.ops.empty() || !l.op_count_at) return false;
  std::vector<Bytes> ops;
  for (const OpRecord& o : l.ops) ops.emplace_back(f.begin() + o.begin, f.begin() + o.end);
  const size_t i = rng() % ops.size(), j = rng() % ops.size();
  switch (rng() % 4) {
    case 0: ops.erase(ops.begin() + i); break;
    case 1: {
      const Bytes o = ops[i];
      ops.insert(ops.begin() + j, o);
      break;
    }
    case 2: std::swap(ops[i], ops[j]); break;
    default: {
      Bytes o = ops[i];
      ops.erase(ops.begin() + i);
      ops.insert(ops.begin() + std::min(j, ops.size()), o);
    }
  }
  Bytes sec[kSections];
  split(f, l, sec);
  Bytes& g = sec[kGraph];
  const size_t base = l.off[kGraph];
  Bytes ng(f.begin() + base, f.begin() + l.ops.front().begin);
  put<uint32_t>(ng.data() + (l.op_count_at - base), static_cast<uint32_t>(ops.size()));
  for (const Bytes& o : ops) ng.insert(ng.end(), o.begin(), o.end());
  ng.insert(ng.end(), f.begin() + l.ops.back().end, f.begin() + base + l.size[kGraph]);
  g.swap(ng);
  Bytes out = rebuild(f, sec);
  if (out.size() > max_size) return false;
  f.swap(out);
  return true;
}

// A tagged record added to an op's attributes or to the config: a known tag
// (maybe already there, maybe on the wrong op kind), an unknown one, any
// type; the count follows.
bool add_record(Bytes& f, const Layout& l, size_t max_size, Rng& rng) {
  if (!l.sections_ok) return false;
  size_t count_at = 0, end = 0;
  int sec = kGraph;
  if (rng() % 4 == 0) {
    if (!l.config.count_at) return false;
    count_at = l.config.count_at, end = l.config.end, sec = kConfig;
  } else {
    if (l.ops.empty()) return false;
    const OpRecord& o = l.ops[rng() % l.ops.size()];
    count_at = o.attrs_at, end = o.end;
  }
  static const char* const kTags[] = {"act", "precision", "act_scale", "act_zp", "num_heads", "eps",
                                      "scale", "pool", "block_sparsity", "alibi", "", "architecture",
                                      "hidden_size", "max_position", "default_pool", "normalize",
                                      "hidden_act", "rope_theta"};
  static const char* const kStrs[] = {"none", "gelu_erf", "gelu_tanh", "tanh", "f32", "s8-dense",
                                      "s8-sparse", "cls", "mean", "bert", "pooler_output", ""};
  const std::string tag = kTags[rng() % (sizeof kTags / sizeof kTags[0])];
  Bytes rec(4);
  put<uint32_t>(rec.data(), static_cast<uint32_t>(tag.size()));
  rec.insert(rec.end(), tag.begin(), tag.end());
  const uint8_t type = rng() % 8 ? static_cast<uint8_t>(1 + rng() % 4) : static_cast<uint8_t>(rng());
  rec.push_back(type);
  auto append = [&rec](const void* p, size_t n) {
    rec.insert(rec.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  };
  if (type == 1) {
    const uint64_t v = interesting_int(0, l, f.size(), rng);
    append(&v, 8);
  } else if (type == 2) {
    const float v = interesting_float(1.f, rng);
    append(&v, 4);
  } else if (type == 3) {
    const std::string v = kStrs[rng() % (sizeof kStrs / sizeof kStrs[0])];
    const uint32_t n = static_cast<uint32_t>(v.size());
    append(&n, 4);
    append(v.data(), v.size());
  } else {
    rec.push_back(static_cast<uint8_t>(rng() % 3));
  }
  Bytes secs[kSections];
  split(f, l, secs);
  Bytes& b = secs[sec];
  const size_t base = l.off[sec];
  put<uint32_t>(b.data() + (count_at - base), get<uint32_t>(b.data() + (count_at - base)) + 1);
  b.insert(b.begin() + static_cast<long>(end - base), rec.begin(), rec.end());
  Bytes out = rebuild(f, secs);
  if (out.size() > max_size) return false;
  f.swap(out);
  return true;
}

// Shape or dtype changed so that the byte count still matches: dims swapped,
// or f32 <-> i32 and i8 <-> u8. Only the graph validation can object.
bool mutate_tensor_type(Bytes& f, const Layout& l, Rng& rng) {
  if (l.tensors.empty()) return false;
  const TensorRecord& t = l.tensors[rng() % l.tensors.size()];
  if (rng() % 2 && t.ndim >= 2) {
    const size_t dims = t.ndim_at + 8;
    const size_t a = rng() % t.ndim, b = rng() % t.ndim;
    const int64_t da = get<int64_t>(f.data() + dims + 8 * a);
    put<int64_t>(f.data() + dims + 8 * a, get<int64_t>(f.data() + dims + 8 * b));
    put<int64_t>(f.data() + dims + 8 * b, da);
    return true;
  }
  const uint32_t swap_to[] = {0, 3, 4, 1, 2, 5};
  const uint32_t d = get<uint32_t>(f.data() + t.dtype_at);
  if (d < 1 || d > 4) return false;
  put<uint32_t>(f.data() + t.dtype_at, swap_to[d]);
  return true;
}

size_t mutate(uint8_t* data, size_t size, size_t max_size, unsigned seed) {
  Rng rng(seed);
  Bytes f(data, data + size);
  const Layout l = walk(f.data(), f.size());
  // Structured mutations when they apply (a few tries), else plain bytes.
  bool done = false;
  for (int tries = 0; tries < 4 && !done; ++tries) {
    switch (rng() % 16) {
      case 0: case 1: case 2: case 3: case 4: done = mutate_field(f, l, rng); break;
      case 5: done = copy_field(f, l, rng); break;
      case 6: case 7: case 8: case 9: done = mutate_section(f, l, max_size, rng); break;
      case 10: case 11: done = mutate_blob(f, l, rng); break;
      case 12: done = mutate_ops(f, l, max_size, rng); break;
      case 13: done = mutate_tensor_type(f, l, rng); break;
      case 14: done = add_record(f, l, max_size, rng); break;
      default: tries = 4; break;  // 1 in 16: plain bytes over the whole file
    }
  }
  if (!done) {
    f.resize(std::max(max_size, size));
    f.resize(LLVMFuzzerMutate(f.data(), size, max_size));
  }
  // Mostly reseal; sometimes leave a checksum stale so that the checks
  // themselves stay covered.
  switch (rng() % 20) {
    case 0: break;
    case 1: reseal(f, false, true); break;
    default: reseal(f, true, true);
  }
  if (f.size() > max_size) return 0;
  std::memcpy(data, f.data(), f.size());
  return f.size();
}

// ---- the run ----------------------------------------------------------------

void check_output(const spinel::Model& m, const spinel::HiddenStates& h,
                  const std::vector<spinel::Sequence>& batch) {
  using spinel::fuzz::finding;
  if (h.offsets.size() != batch.size() + 1 || h.offsets[0] != 0)
    finding("run: wrong number of offsets");
  for (size_t i = 0; i < batch.size(); ++i)
    if (h.offsets[i + 1] - h.offsets[i] != static_cast<int64_t>(batch[i].ids.size()))
      finding("run: offsets do not match the sequence lengths");
  const auto& g = m.graph();
  if (h.width != g.values.at(static_cast<size_t>(g.output)).width)
    finding("run: output width differs from the graph output's");
  // Touch every output float, so that a short buffer shows up in ASan.
  volatile float sink = 0;
  for (int64_t i = 0; i < h.offsets.back() * h.width; ++i) sink = sink + h.data[i];
}

void run(const std::shared_ptr<const spinel::Model>& m) {
  const spinel::ModelConfig& c = m->config();
  // A valid but large model: loading it was the test; running it would only
  // slow the fuzzer down.
  if (c.hidden_size > 4096 || c.num_layers > 64 || c.hidden_size * c.num_layers > 8192 ||
      c.intermediate_size > 16384)
    return;
  const auto& tok = m->tokenizer();
  const int64_t positions = std::min<int64_t>(c.max_position, 12);
  std::vector<spinel::Sequence> batch(2);
  if (positions >= 2) {
    try {
      batch[0].ids = tok.encode("Hello, wörld! 中国 [MASK]", std::nullopt, positions).ids;
    } catch (const spinel::Error&) {
    }
  }
  if (batch[0].ids.empty()) batch[0].ids = {tok.cls_id()};
  // Ids at both ends of the vocabulary, the last token type.
  const int32_t last_id = static_cast<int32_t>(c.vocab_size - 1);
  const int32_t last_type = static_cast<int32_t>(std::max<int64_t>(c.type_vocab_size, 1) - 1);
  batch[1].ids = {0, last_id, tok.sep_id(), 1};
  batch[1].type_ids = {0, last_type, last_type, 0};
  const size_t len1 = static_cast<size_t>(std::clamp<int64_t>(c.max_position, 1, 4));
  batch[1].ids.resize(len1);
  batch[1].type_ids.resize(len1);
  try {
    spinel::Session s(m, 1);
    check_output(*m, s.run(batch), batch);
    batch.erase(batch.begin());
    check_output(*m, s.run(batch), batch);
  } catch (const spinel::Error&) {
  }
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  return mutate(data, size, max_size, seed);
}

// Sections of two parents mixed (e.g. the graph of an INT8 model over the
// tensors of an f32 one), resealed.
extern "C" size_t LLVMFuzzerCustomCrossOver(const uint8_t* d1, size_t n1, const uint8_t* d2,
                                            size_t n2, uint8_t* out, size_t max_out,
                                            unsigned int seed) {
  Rng rng(seed);
  const Bytes f1(d1, d1 + n1), f2(d2, d2 + n2);
  const Layout l1 = walk(f1.data(), f1.size()), l2 = walk(f2.data(), f2.size());
  if (!l1.sections_ok || !l2.sections_ok) return 0;
  Bytes s1[kSections], s2[kSections];
  split(f1, l1, s1);
  split(f2, l2, s2);
  for (int s = 0; s < kSections; ++s)
    if (rng() % 2) s1[s].swap(s2[s]);
  Bytes f = rebuild(f1, s1);
  reseal(f, true, true);
  if (f.size() > max_out) return 0;
  std::memcpy(out, f.data(), f.size());
  return f.size();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::shared_ptr<const spinel::Model> m;
  try {
    m = spinel::Model::from_memory(data, size, "fuzz", spinel::LoadOptions{});
  } catch (const spinel::Error&) {
    return 0;
  }
  run(m);
  return 0;
}

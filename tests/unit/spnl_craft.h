// Crafting damaged .spnl files for tests: walks the v2 layout on its own
// (independently of runtime/spnl.cpp) and reseals the checksums with
// libxxhash, so that a corrupted field reaches the validation behind them.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/spnl.h"

namespace spinel::testing {

// The message Model::load throws for `path`, or "" when it loads.
inline std::string load_error(const std::string& path) {
  try {
    Model::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

using Bytes = std::vector<char>;

inline Bytes read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

inline void write_file(const std::string& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(b.data(), static_cast<std::streamsize>(b.size()));
}

template <typename T>
T get(const Bytes& b, size_t at) {
  T v;
  std::memcpy(&v, &b[at], sizeof v);
  return v;
}
template <typename T>
void put(Bytes& b, size_t at, T v) {
  std::memcpy(&b[at], &v, sizeof v);
}

// Header: magic 0, version 8, endian 12, file size 16, section offsets 24
// (config, tokenizer, graph, tensors, data), sizes 64, meta checksum 104.
constexpr size_t kSectionOffset = 24, kSectionSize = 64, kMetaChecksum = 104, kHeaderBytes = 128;
enum { kConfigSec = 0, kTokenizerSec, kGraphSec, kTensorSec, kDataSec };

inline uint64_t section_offset(const Bytes& b, int s) { return get<uint64_t>(b, kSectionOffset + 8 * s); }

// Recomputes the metadata checksum after an edit of the header or metadata.
inline void reseal(Bytes& b) {
  put<uint64_t>(b, kMetaChecksum, 0);
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, b.data(), kHeaderBytes);
  const uint64_t data = section_offset(b, kDataSec);
  XXH3_64bits_update(st, b.data() + kHeaderBytes, data - kHeaderBytes);
  put<uint64_t>(b, kMetaChecksum, XXH3_64bits_digest(st));
  XXH3_freeState(st);
}

// Byte positions of the fields of graph op `index`.
struct OpFields {
  size_t kind, in0, in1, out, w, eps, scale;
};
inline OpFields op_fields(const Bytes& b, size_t index) {
  size_t p = section_offset(b, kGraphSec);
  const uint32_t nv = get<uint32_t>(b, p);
  p += 4;
  for (uint32_t i = 0; i < nv; ++i) p += 4 + get<uint32_t>(b, p) + 8;  // name, width
  p += 4;                                                              // op count
  for (size_t i = 0;; ++i) {
    OpFields f;
    f.kind = p;
    p += 4;
    p += 4 + get<uint32_t>(b, p);  // name
    f.in0 = p, f.in1 = p + 4, f.out = p + 8, f.w = p + 12;
    p += 12 + 5 * 4;
    // act, precision, act_scale, act_zp, num_heads, eps, scale
    f.eps = p + 20, f.scale = p + 24;
    p += 28;
    if (i == index) return f;
  }
}

// Config fields: architecture string, then i64 vocab, hidden, layers, heads,
// intermediate, max_position, type_vocab; f32 layer_norm_eps.
inline size_t config_field(const Bytes& b, int i64_index) {
  const size_t p = section_offset(b, kConfigSec);
  return p + 4 + get<uint32_t>(b, p) + 8 * static_cast<size_t>(i64_index);
}

}  // namespace spinel::testing

// Crafting damaged .spnl files for tests: walks the format-3 layout on its
// own (independently of runtime/spnl.cpp), edits fields in place or splices
// bytes in (re-laying the sections out), and reseals the checksums with
// libxxhash, so that a corrupted field reaches the validation behind them.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
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
inline uint64_t section_size(const Bytes& b, int s) { return get<uint64_t>(b, kSectionSize + 8 * s); }

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

// Replaces b[start, end) (inside one metadata section) by `repl`: the later
// sections move, the data section stays 64-byte aligned, the header follows,
// and the file is resealed.
inline void splice(Bytes& b, size_t start, size_t end, const Bytes& repl) {
  int sec = -1;
  for (int s = 0; s < kDataSec; ++s)
    if (sec < 0 && section_offset(b, s) <= start && end <= section_offset(b, s) + section_size(b, s))
      sec = s;  // at a boundary: the end of the earlier section
  if (sec < 0) throw Error("splice: range is not inside one metadata section");
  std::vector<Bytes> secs;
  for (int s = 0; s < kDataSec; ++s) {
    const auto lo = b.begin() + static_cast<long>(section_offset(b, s));
    secs.emplace_back(lo, lo + static_cast<long>(section_size(b, s)));
  }
  Bytes& t = secs[sec];
  const size_t lo = start - section_offset(b, sec), hi = end - section_offset(b, sec);
  Bytes edited(t.begin(), t.begin() + static_cast<long>(lo));
  edited.insert(edited.end(), repl.begin(), repl.end());
  edited.insert(edited.end(), t.begin() + static_cast<long>(hi), t.end());
  t.swap(edited);
  const auto data_lo = b.begin() + static_cast<long>(section_offset(b, kDataSec));
  const Bytes data(data_lo, data_lo + static_cast<long>(section_size(b, kDataSec)));
  Bytes out(b.begin(), b.begin() + kHeaderBytes);
  for (int s = 0; s < kDataSec; ++s) {
    put<uint64_t>(out, kSectionOffset + 8 * s, out.size());
    put<uint64_t>(out, kSectionSize + 8 * s, secs[s].size());
    out.insert(out.end(), secs[s].begin(), secs[s].end());
  }
  out.resize((out.size() + 63) / 64 * 64, 0);
  put<uint64_t>(out, kSectionOffset + 8 * kDataSec, out.size());
  out.insert(out.end(), data.begin(), data.end());
  put<uint64_t>(out, 16, out.size());
  b.swap(out);
  reseal(b);
}

// Encoding pieces, for splicing.
template <typename T>
Bytes enc(T v) {
  Bytes o(sizeof v);
  std::memcpy(o.data(), &v, sizeof v);
  return o;
}
inline Bytes enc_str(const std::string& s) {
  Bytes o = enc<uint32_t>(static_cast<uint32_t>(s.size()));
  o.insert(o.end(), s.begin(), s.end());
  return o;
}
// A tagged record: tag, type (1 i64, 2 f32, 3 str, 4 bool), value bytes.
inline Bytes enc_record(const std::string& tag, uint8_t type, const Bytes& value) {
  Bytes o = enc_str(tag);
  o.push_back(static_cast<char>(type));
  o.insert(o.end(), value.begin(), value.end());
  return o;
}

// Positions in a tagged record list: tag -> position of the value.
struct Records {
  size_t count_at = 0, end = 0;
  std::map<std::string, size_t> value_at;
};

inline size_t str_end(const Bytes& b, size_t p) { return p + 4 + get<uint32_t>(b, p); }

inline Records walk_records(const Bytes& b, size_t p) {
  Records r;
  r.count_at = p;
  const uint32_t n = get<uint32_t>(b, p);
  p += 4;
  for (uint32_t i = 0; i < n; ++i) {
    const std::string tag(&b[p + 4], get<uint32_t>(b, p));
    p = str_end(b, p);
    const uint8_t type = static_cast<uint8_t>(b[p]);
    p += 1;
    r.value_at[tag] = p;
    p += type == 1 ? 8 : type == 2 ? 4 : type == 4 ? 1 : 4 + get<uint32_t>(b, p);
  }
  r.end = p;
  return r;
}

// Byte positions of the fields of graph op `index`; eps and scale are the
// positions of those attributes' values (0 when the op has none).
struct OpFields {
  size_t kind, name, in0, in1, out, nslots, w, eps, scale, begin, end;
  Records attrs;
};
inline OpFields op_fields(const Bytes& b, size_t index) {
  size_t p = section_offset(b, kGraphSec);
  const uint32_t nv = get<uint32_t>(b, p);
  p += 4;
  for (uint32_t i = 0; i < nv; ++i) p = str_end(b, p) + 8 + 4;  // name, width, rows
  p += 4;                                                        // op count
  for (size_t i = 0;; ++i) {
    OpFields f{};
    f.begin = f.kind = p;
    f.name = p + 4;
    p = str_end(b, p + 4);
    f.in0 = p, f.in1 = p + 4, f.out = p + 8, f.nslots = p + 12, f.w = p + 16;
    p += 16 + 4 * size_t{get<uint32_t>(b, p + 12)};
    f.attrs = walk_records(b, p);
    p = f.end = f.attrs.end;
    if (f.attrs.value_at.count("eps")) f.eps = f.attrs.value_at["eps"];
    if (f.attrs.value_at.count("scale")) f.scale = f.attrs.value_at["scale"];
    if (i == index) return f;
  }
}

// Appends a record to op `index`'s attribute list (count + 1).
inline void add_op_record(Bytes& b, size_t index, const Bytes& record) {
  const OpFields f = op_fields(b, index);
  put<uint32_t>(b, f.attrs.count_at, get<uint32_t>(b, f.attrs.count_at) + 1);
  splice(b, f.end, f.end, record);
}

// Replaces op `index`'s weight slot list.
inline void set_op_slots(Bytes& b, size_t index, const std::vector<int32_t>& slots) {
  const OpFields f = op_fields(b, index);
  Bytes repl = enc<uint32_t>(static_cast<uint32_t>(slots.size()));
  for (int32_t s : slots) {
    const Bytes e = enc<int32_t>(s);
    repl.insert(repl.end(), e.begin(), e.end());
  }
  splice(b, f.nslots, f.attrs.count_at, repl);
}

// The config's records: field name -> position of its value.
inline Records config_records(const Bytes& b) { return walk_records(b, section_offset(b, kConfigSec)); }
inline size_t config_field(const Bytes& b, const std::string& name) {
  return config_records(b).value_at.at(name);
}

}  // namespace spinel::testing

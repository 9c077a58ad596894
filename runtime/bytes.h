// Little-endian byte writer and a bounds-checked reader for the sections of a
// .spnl file. The reader never reads past its span: every read checks first and
// throws spinel::Error naming what it was reading.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/error.h"

namespace spinel {

class ByteWriter {
 public:
  template <typename T>
  void put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    buf_.insert(buf_.end(), p, p + sizeof(T));
  }
  void put_str(const std::string& s) {
    put<uint32_t>(static_cast<uint32_t>(s.size()));
    buf_.insert(buf_.end(), s.begin(), s.end());
  }
  void put_bytes(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    buf_.insert(buf_.end(), b, b + n);
  }
  template <typename T>
  void put_vec(const std::vector<T>& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    put<uint64_t>(v.size());
    put_bytes(v.data(), v.size() * sizeof(T));
  }
  const std::vector<uint8_t>& bytes() const { return buf_; }
  std::vector<uint8_t>& bytes() { return buf_; }

 private:
  std::vector<uint8_t> buf_;
};

class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size, std::string what)
      : p_(data), size_(size), what_(std::move(what)) {}

  template <typename T>
  T get(const char* field) {
    static_assert(std::is_trivially_copyable_v<T>);
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string get_str(const char* field) {
    const uint32_t n = get<uint32_t>(field);
    need(n, field);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }
  template <typename T>
  std::vector<T> get_vec(const char* field) {
    static_assert(std::is_trivially_copyable_v<T>);
    const uint64_t n = get<uint64_t>(field);
    if (n > (size_ - pos_) / sizeof(T)) {
      fail(what_, ": field '", field, "' claims ", n, " elements but only ", size_ - pos_,
           " bytes remain");
    }
    std::vector<T> v(n);
    if (n) std::memcpy(v.data(), p_ + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
    return v;
  }
  size_t remaining() const { return size_ - pos_; }
  size_t position() const { return pos_; }
  const std::string& what() const { return what_; }

 private:
  void need(size_t n, const char* field) const {
    if (n > size_ - pos_) {
      fail(what_, ": truncated while reading '", field, "' (needs ", n, " bytes at offset ", pos_,
           ", section has ", size_, ")");
    }
  }
  const uint8_t* p_;
  size_t size_;
  size_t pos_ = 0;
  std::string what_;
};

}  // namespace spinel

// The .spnl file: one mmap-able file holding a converted model.
//
//   [header 128 B][config][tokenizer][graph][tensor table] ... [data, 64-B aligned blobs]
//
// The header holds a checksum of itself and the metadata; the tensor table one
// per weight blob.
//
// The header gives offset and size of every section; the loader checks each of
// them, and every count, offset and size inside a section, against the file's
// size before using it. Weights are used straight from the mapping.
//
// Format 3 sections (little-endian; str = u32 length + bytes; a record is
// str tag, u8 type (1 i64, 2 f32, 3 str, 4 bool), value):
//   config     u32 count, records: every ModelConfig field (architecture, a
//              family registered in models/registry.h; enums by name)
//   tokenizer  str kind ("wordpiece", "bpe", "sentencepiece"), then that kind's
//              own serialization (runtime/tokenizer/*_io.cpp, sentencepiece.cpp)
//   graph      u32 count, values (str name, i64 width, u32 rows);
//              u32 count, ops (u32 kind, str name, i32 in0, in1, out, u32 slot
//              count + i32 weight slots up to the last used, u32 count +
//              attribute records, only those differing from Op's defaults);
//              i32 output; u32 count, named outputs (str name, i32 value)
//   tensors    u32 count, (str name, u32 dtype, u64 ndim, i64 dims, u64
//              offset, u64 nbytes, u64 XXH3-64)
// A record tag the reader does not know is an error asking for a newer
// spinel; adding an attribute or a config field (a row in the tables of
// spnl.cpp) or a tokenizer kind is therefore not a format change.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <string>
#include <vector>

#include "runtime/ir.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/tokenizer/wordpiece.h"  // for writers that build one

namespace spinel {

class Backend;
class PreparedModel;

constexpr char kSpnlMagic[8] = {'S', 'P', 'I', 'N', 'E', 'L', '\x1a', '\n'};
// 2: XXH3-64 checksums of the metadata (header) and of every weight blob
// (tensor table); blobs in table order without overlap.
// 3: config fields and op attributes as tagged records (a new one is not a
// format change), the architecture resolved by models::find_family, values
// with their row kind, named graph outputs, a tokenizer section with a kind
// tag. Files of format 1 and 2 are refused with "convert again".
constexpr uint32_t kSpnlVersion = 3;
constexpr uint32_t kSpnlEndianTag = 0x01020304;
constexpr uint64_t kSpnlAlign = 64;

// Collects a model in memory, then writes it as one .spnl file.
class SpnlWriter {
 public:
  // Copies the data; returns the tensor's index for Op::w.
  int32_t add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape,
                     const void* data, size_t nbytes);
  // Replaces a tensor's contents (e.g. f32 weights by their s8 quantization).
  void set_tensor(int32_t idx, DType dtype, std::vector<int64_t> shape, const void* data,
                  size_t nbytes);
  // Offsets are assigned by write().
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const void* tensor_data(int32_t idx) const { return blobs_.at(idx).data(); }

  ModelConfig config;
  Graph graph;
  AnyTokenizer tokenizer;  // any kind: WordPieceTokenizer, BpeTokenizer, ...

  // Validates the graph, then writes to `path` atomically (temp file + rename),
  // so a failed conversion leaves no partial file behind.
  void write(const std::string& path) const;

 private:
  std::vector<TensorInfo> tensors_;
  std::vector<std::vector<uint8_t>> blobs_;
};

struct LoadOptions {
  // Check every weight blob against its checksum at load (one pass over the
  // weights; the header and metadata are always checked).
  bool verify_weights = true;
};

// A loaded model: read-only, shared by every session that runs it.
class Model {
 public:
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // Maps the file. Throws spinel::Error naming the file and the first thing
  // wrong with it: every count, offset, index and number is checked, and the
  // checksums, before anything is used.
  static std::shared_ptr<const Model> load(const std::string& path, const LoadOptions& opts = {});
  // The same from bytes in memory (copied; `name` is used in messages).
  static std::shared_ptr<const Model> from_memory(const void* data, size_t size,
                                                  const std::string& name,
                                                  const LoadOptions& opts = {});
  // Throws spinel::Error naming the first weight whose checksum differs.
  void verify_weights() const;

  const ModelConfig& config() const { return config_; }
  const Graph& graph() const { return graph_; }
  // The tokenizer section's kind: "wordpiece", "bpe" or "sentencepiece".
  const std::string& tokenizer_kind() const { return tokenizer_kind_; }
  const Tokenizer& tokenizer() const { return tokenizer_.get(); }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const void* tensor_data(int32_t idx) const;
  template <typename T>
  const T* data(int32_t idx) const {
    return idx < 0 ? nullptr : static_cast<const T*>(tensor_data(idx));
  }
  const std::string& path() const { return path_; }
  uint64_t file_size() const { return size_; }
  uint32_t format_version() const { return version_; }

 private:
  // Per-backend state made from this model once and shared by its sessions
  // (runtime/prepared.cpp), keyed by backend name and variant.
  friend std::shared_ptr<const PreparedModel> prepared_model(const Model& m, const Backend& b);
  mutable std::mutex prepared_mu_;
  mutable std::vector<std::pair<std::string, std::shared_ptr<const void>>> prepared_;

  Model() = default;
  void parse(const LoadOptions& opts);
  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;     // base_ is an mmap of size_ bytes
  void* owned_ = nullptr;   // or a buffer of ours (from_memory)
  uint64_t data_offset_ = 0, data_size_ = 0;
  uint32_t version_ = 0;
  ModelConfig config_;
  Graph graph_;
  std::string tokenizer_kind_;
  AnyTokenizer tokenizer_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace spinel

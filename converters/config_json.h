// Numbers from the HF config.json that export folders keep beside the ONNX
// file (or in its hf/ subfolder), for what a graph does not say, e.g. the
// sequence limit of an ALiBi model, which has no position table.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace spinel {
namespace onnx_import {

struct ConfigNumber {
  int64_t value = 0;
  std::string source;  // "config.json max_position_embeddings"
};

// The first of `keys` holding an integer in [lo, hi] in model_dir/config.json,
// else model_dir/hf/config.json; nullopt when neither file has one. A file
// that is not JSON is an error naming it.
std::optional<ConfigNumber> config_json_int(const std::string& model_dir, const std::vector<std::string>& keys,
                                            int64_t lo, int64_t hi);

}  // namespace onnx_import
}  // namespace spinel

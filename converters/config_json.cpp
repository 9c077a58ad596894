#include "converters/config_json.h"

#include <cmath>
#include <filesystem>

#include "runtime/util/json.h"

namespace spinel {
namespace onnx_import {

std::optional<ConfigNumber> config_json_int(const std::string& model_dir, const std::vector<std::string>& keys,
                                            int64_t lo, int64_t hi) {
  namespace fs = std::filesystem;
  for (const fs::path& p : {fs::path(model_dir) / "config.json", fs::path(model_dir) / "hf" / "config.json"}) {
    if (!fs::exists(p)) continue;
    const json::Value c = json::parse_file(p.string());
    for (const std::string& key : keys)
      if (const json::Value* v = c.find(key);
          v && v->is_number() && v->num == std::floor(v->num) && v->num >= static_cast<double>(lo) &&
          v->num <= static_cast<double>(hi))
        return ConfigNumber{static_cast<int64_t>(v->num), p.filename().string() + " " + key};
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace onnx_import
}  // namespace spinel

// Messages for ONNX graphs spinel cannot import: what is wrong, in a few
// lines, and what to do instead (the fused ops of an ONNX Runtime-optimized
// file, a quantize_dynamic file, a family spinel does not support yet).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "converters/onnx_graph.h"

namespace spinel::onnx_import {

// At most this many node names are listed; the rest are counted.
inline constexpr size_t kMaxNamedNodes = 20;

// "RoBERTa is not supported yet (supported: BERT)" when a config.json beside
// `onnx_path` names a model_type that is not a registered family
// (models/registry.h); nullopt when there is no such file, it cannot be read
// as JSON, or the family is supported. Only a hint: never throws.
std::optional<std::string> unsupported_family(const std::string& onnx_path);

// Throws spinel::Error explaining why the graph was rejected: `uncovered` are
// the nodes no pattern explained, `problems` the recognisers' reasons.
// `onnx_path` locates config.json beside the model, when there is one.
// The message leads with what to do when the cause is a known one (an
// unsupported family, an ONNX Runtime-optimized or an already quantized
// file), then counts the unsupported nodes by op type and names at most
// kMaxNamedNodes of them, then the first few of the recognisers' reasons.
[[noreturn]] void reject_graph(const GraphIndex& g, const std::vector<int>& uncovered,
                               const std::vector<std::string>& problems,
                               const std::string& onnx_path);

}  // namespace spinel::onnx_import

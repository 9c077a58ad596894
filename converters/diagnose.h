// Messages for ONNX graphs spinel cannot import: what is wrong, in a few
// lines, and what to do instead (the fused ops of an ONNX Runtime-optimized
// file, a quantize_dynamic file, a family spinel does not support yet).
#pragma once

#include <string>
#include <vector>

#include "converters/onnx_graph.h"

namespace spinel::onnx_import {

// Throws spinel::Error explaining why the graph was rejected: `uncovered` are
// the nodes no pattern explained, `problems` the recognisers' reasons.
// `onnx_path` locates config.json beside the model, when there is one.
[[noreturn]] void reject_graph(const GraphIndex& g, const std::vector<int>& uncovered,
                               const std::vector<std::string>& problems,
                               const std::string& onnx_path);

}  // namespace spinel::onnx_import

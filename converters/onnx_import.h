// ONNX importer: loads a model with libonnx's protobuf classes, finds the model
// family whose encoder explains the graph (converters/family.h, models/) and
// lowers it into spinel's IR.
#pragma once

#include <string>

#include "runtime/spnl.h"

namespace spinel {

struct ImportReport {
  int opset = 0;
  std::string producer;
  std::string architecture;     // the family recognised: "bert", "distilbert"
  std::string layer_norm_form;  // "LayerNormalization" or "decomposed"
  std::string gelu_form;        // "erf" or "tanh"
  std::string mask_form;        // "-10000", "float32-min", "none"; " (Where)" for masked_fill
  std::string heads;            // outputs besides the hidden states: "pooler_output", "mean pooling + L2", ""
  int64_t onnx_nodes = 0;       // nodes in the source graph
};

// Reads `onnx_path` (external data allowed only inside the model's own
// directory: absolute paths, ".." escapes and symlinks leading out are
// rejected), recognises the encoder of one of the registered model families
// and fills out.config, out.graph and the weight tensors. The tokenizer is
// left to the caller. Throws spinel::Error naming the file, or the nodes no
// family's patterns explained and the best candidate's reasons.
ImportReport import_onnx(const std::string& onnx_path, SpnlWriter& out);

// The former name, kept for callers not yet moved over.

}  // namespace spinel

// ONNX importer: loads a model with libonnx's protobuf classes and lowers the
// HF BertModel encoder exported by torch.onnx.export into spinel's IR.
#pragma once

#include <string>

#include "runtime/spnl.h"

namespace spinel {

struct ImportReport {
  int opset = 0;
  std::string producer;
  std::string layer_norm_form;  // "LayerNormalization" or "decomposed"
  std::string gelu_form;        // "erf" or "tanh"
  std::string mask_form;        // "-10000", "float32-min", or "none"
  int64_t onnx_nodes = 0;       // nodes in the source graph
};

// Reads `onnx_path` (external data allowed only inside the model's own
// directory: absolute paths, ".." escapes and symlinks leading out are
// rejected), recognises the BERT encoder and fills out.config, out.graph and
// the weight tensors. The tokenizer is left to the caller. Throws
// spinel::Error naming the file, or every node that matched no pattern with
// its op type.
ImportReport import_onnx_bert(const std::string& onnx_path, SpnlWriter& out);

}  // namespace spinel

// BERT (HF BertModel) as torch.onnx.export writes it: word + position +
// token-type embeddings (token types from an input, or the all-zero buffer of
// a graph without token_type_ids), the post-LN encoder, and the heads users
// export with it: BertModel's pooler (CLS -> dense -> tanh, "pooler_output")
// and sentence-transformers' mean pooling (+ L2 normalize).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "converters/family.h"

namespace spinel {
namespace onnx_import {

// BertPooler: tanh(h[:, 0] W + b) as Gather(h, 0, axis 1) -> Gemm or MatMul
// (+ Add) -> Tanh, ending at a graph output.
struct PoolerMatch {
  std::vector<int> nodes;
  std::string weight, bias;  // bias may be empty
  bool transposed = false;   // Gemm transB = 1: the weight is stored [out, in]
  int64_t in_features = 0, out_features = 0;
  std::string out;  // the graph output
  int first = -1;   // the Gather, for messages
};
// `gather` reads the hidden states `hidden`. Never covers anything.
std::optional<PoolerMatch> match_bert_pooler(const GraphIndex& g, const std::string& hidden, int gather,
                                             std::string& why);

std::unique_ptr<FamilyMatch> match_bert(GraphIndex& g);

}  // namespace onnx_import
}  // namespace spinel

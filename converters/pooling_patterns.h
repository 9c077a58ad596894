// Sentence-embedding heads that exporters append to an encoder, recognised so
// that they become the model's default pooling instead of unsupported nodes:
// sentence-transformers' Pooling (mean over the attention mask) and Normalize
// (L2), as Optimum exports them (outputs token_embeddings + sentence_embedding).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "converters/onnx_graph.h"

namespace spinel {
namespace onnx_import {

struct MeanPoolMatch {
  std::vector<int> nodes;
  std::string mask_input;  // the graph input holding the 0/1 attention mask
  std::string out;         // the pooled (and, when normalized, L2-normalized) value
  bool normalized = false;
};

// sum(h * m, seq) / max(sum(m, seq), eps) with m = the attention mask expanded
// to h's shape, optionally followed by x / max(||x||_2, eps) (ReduceL2 + Clip
// [+ Expand] + Div, or LpNormalization p=2). `hidden` is the [batch, seq,
// hidden] value pooled. Does not cover anything; the caller covers `nodes`.
std::optional<MeanPoolMatch> match_mean_pooling(const GraphIndex& g, const std::string& hidden,
                                                std::string& why);

}  // namespace onnx_import
}  // namespace spinel

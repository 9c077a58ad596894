// Recognises the HF BertModel encoder in a torch.onnx.export graph: the
// embeddings (+ LayerNorm), then per layer self-attention, output dense +
// residual + LayerNorm, intermediate dense + GELU, output dense + residual +
// LayerNorm. Anchors on the weights and the Softmax nodes, not on node order,
// and marks every node it explains as covered in the GraphIndex.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "converters/onnx_graph.h"
#include "converters/onnx_patterns.h"

namespace spinel {
namespace onnx_import {

struct EmbeddingMatch {
  int word_gather = -1;
  std::string word, position, token_type;  // 2-D tables; position/token_type may be empty
  int64_t position_limit = 0;  // length of the position-id buffer (0: positions from Range)
  LayerNormMatch ln;
};

struct MaskMatch {
  std::string input;  // graph input holding the [batch, seq] 0/1 mask
  double fill = 0;    // value added at masked positions
};

struct AttentionMatch {
  int softmax = -1;
  LinearMatch q, k, v;
  std::string x;    // hidden states the projections read
  std::string ctx;  // merged heads [batch, seq, hidden]
  int64_t heads = 0;
  double scale = 1.0;  // multiplier of Q.K^T
  std::string mask;    // empty when no mask is added
};

struct LayerMatch {
  AttentionMatch att;
  LinearMatch attn_out;
  LayerNormMatch ln1;
  LinearMatch inter;
  GeluMatch gelu;
  LinearMatch out;
  LayerNormMatch ln2;
};

struct BertMatch {
  std::optional<EmbeddingMatch> emb;
  std::vector<LayerMatch> layers;
  std::optional<MaskMatch> mask;
  std::vector<std::string> problems;  // why the graph did not fully match
};

// Never throws on a mismatch: it records problems and covers what it explained,
// so the caller can report the uncovered nodes together with the reasons.
BertMatch match_bert(GraphIndex& g);

}  // namespace onnx_import
}  // namespace spinel

// Transformer-encoder patterns of torch.onnx.export graphs that several model
// families share, recognised without knowing the family: the absolute-position
// embedding block (lookups summed, then LayerNorm), the attention mask (additive
// or through Where), multi-head self-attention (the Q.K^T scale may sit before
// or after the MatMul), the post-LN layer (attention, output Linear + residual +
// LayerNorm, FFN Linear + GELU + Linear + residual + LayerNorm) and the chain of
// layers. Anchors on the weights and the Softmax nodes, not on node order, and
// marks every node it explains as covered in the GraphIndex. A family module
// (models/<family>/) decides which variants it accepts and what else its
// graphs hold (heads, outputs).
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
  // Token types: read from a graph input (-1), or every token uses this row
  // (graphs without a token_type_ids input look up a constant all-zero buffer).
  int64_t token_type_row = -1;
  LayerNormMatch ln;
};

struct MaskMatch {
  std::string input;   // graph input holding the [batch, seq] 0/1 mask
  double fill = 0;     // value added at (or, through Where, put into) masked positions
  bool where = false;  // Where(mask == 0, fill, scores) instead of scores + (1 - mask) * fill
};

struct AttentionMatch {
  int softmax = -1;
  LinearMatch q, k, v;
  std::string x;    // hidden states the projections read
  std::string ctx;  // merged heads [batch, seq, hidden]
  int64_t heads = 0;
  double scale = 1.0;  // multiplier of Q.K^T (a scale of Q before the MatMul folded in)
  std::string mask;    // empty when no mask is applied
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

// Word (+ position) (+ token type) lookups added together, then LayerNorm.
// Word embeddings are the table read by `input_ids` (else the biggest table read
// by a graph input); a second table read by a graph input is the token types; a
// table read by positions 0..seq-1 the positions; a table read by a constant
// index the token-type row of graphs without a token_type_ids input.
std::optional<EmbeddingMatch> match_embeddings(GraphIndex& g, std::string& why);

// The post-LN encoder: every Softmax matched as one self-attention, the layers
// chained from `input` (the embeddings' output).
struct EncoderMatch {
  std::vector<LayerMatch> layers;
  std::optional<MaskMatch> mask;
  std::string output;  // the last layer's output (or `input` when there are none)
  std::vector<std::string> problems;
};
EncoderMatch match_post_ln_encoder(GraphIndex& g, const std::string& input);

// Every graph output must be `hidden` (the last layer's output) or one of
// `heads` (outputs a family recognised); adds a problem for each other one.
void check_graph_outputs(const GraphIndex& g, const std::string& hidden,
                         const std::vector<std::string>& heads, std::vector<std::string>& problems);

// "-10000", "float32-min", "none", or the fill value.
std::string mask_form(const std::optional<MaskMatch>& mask);

}  // namespace onnx_import
}  // namespace spinel

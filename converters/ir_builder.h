// Writing spinel IR from recognised ONNX patterns: values, ops and weights
// checked on the way in (finite, the expected element count), and the
// lowering of the generic encoder patterns (converters/encoder_patterns.h)
// that the family modules share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "converters/encoder_patterns.h"
#include "converters/onnx_graph.h"
#include "runtime/spnl.h"

namespace spinel {
namespace onnx_import {

class IrBuilder {
 public:
  IrBuilder(const ConstantTable& consts, SpnlWriter& out) : consts_(consts), out_(out) {}

  SpnlWriter& out() { return out_; }
  ModelConfig& config() { return out_.config; }
  Graph& graph() { return out_.graph; }

  int32_t value(const std::string& name, int64_t width, Rows rows = Rows::Tokens);

  // Every weight the IR takes passes here. A NaN or Inf weight makes every
  // output NaN (and has no INT8 quantization): refuse it by name.
  std::vector<float> floats(const std::string& onnx_name, int64_t expect) const;

  int32_t tensor(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& data);

  // A weight copied as is; `onnx_name` may be empty for an absent LayerNorm
  // bias (LayerNormalization's B is optional), which then becomes zeros.
  int32_t weight(const std::string& name, const std::string& onnx_name, std::vector<int64_t> shape);

  // Appends a finished op and returns its output value. Ops are built as
  // locals and moved in: a reference into graph.ops would dangle as soon as
  // the next op makes the vector grow.
  int32_t add(Op op);

 private:
  const ConstantTable& consts_;
  SpnlWriter& out_;
};

// Embedding (+ LayerNorm) op from a matched embedding block; fills the
// config's vocab_size, hidden_size, max_position, type_vocab_size and
// layer_norm_eps. A constant token-type row becomes a one-row table.
int32_t lower_embeddings(const GraphIndex& g, const EmbeddingMatch& e, IrBuilder& ir);

// Per layer Linear(QKV fused) -> Attention -> Linear(+residual) -> LayerNorm ->
// Linear(+GELU) -> Linear(+residual) -> LayerNorm, reading `in`; fills the
// config's num_layers, num_heads, intermediate_size and hidden_act. Returns
// the last layer's output value.
int32_t lower_post_ln_layers(const GraphIndex& g, const std::vector<LayerMatch>& layers, int32_t in,
                             IrBuilder& ir);

}  // namespace onnx_import
}  // namespace spinel

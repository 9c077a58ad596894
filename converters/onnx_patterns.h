// Small ONNX subgraph patterns shared by the model recognisers: Linear
// (MatMul + bias), LayerNorm (fused or decomposed), GELU (recognised by its
// numbers, not its node order), shape computations and attention head
// split/merge. Each matcher returns the nodes it explains; on a mismatch it
// returns nothing and says why in `why`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "converters/onnx_graph.h"
#include "runtime/ir.h"

namespace spinel {
namespace onnx_import {

struct LinearMatch {
  std::vector<int> nodes;  // MatMul [+ Add]
  int matmul = -1;
  std::string x, weight, bias;  // bias empty when there is none
  std::string out;              // MatMul output, or the bias Add's output
  int64_t in_features = 0, out_features = 0;
};
// `matmul` must be a MatMul whose B is a 2-D constant [K, N] (torch's layout).
std::optional<LinearMatch> match_linear(const GraphIndex& g, int matmul, std::string& why);
// The Linear whose result is `value` (bias Add output or bare MatMul output).
std::optional<LinearMatch> match_linear_producing(const GraphIndex& g, const std::string& value,
                                                  std::string& why);

struct LayerNormMatch {
  std::vector<int> nodes;
  std::string x, gamma, beta, out;
  float eps = 0.f;
  bool fused = false;  // a LayerNormalization node (opset >= 17)
};
// LayerNorm over the last axis of `x`; every reader of `x` must be part of it.
std::optional<LayerNormMatch> match_layernorm(const GraphIndex& g, const std::string& x,
                                              std::string& why);

struct GeluMatch {
  std::vector<int> nodes;
  std::string out;
  Activation act = Activation::None;
};
// The elementwise region starting at `x`: every node reached forward from x
// through elementwise ops with scalar constants. It must have one result,
// and evaluating it on sample points must reproduce the erf or tanh GELU.
std::optional<GeluMatch> match_gelu(const GraphIndex& g, const std::string& x, std::string& why);

// A shape vector computed from Shape/Gather/Unsqueeze/Concat/... chains. An
// element is unknown (nullopt) when it depends on the input's dimensions.
struct ShapeEval {
  std::vector<int> nodes;  // the nodes of the computation
  bool known_length = true;
  std::vector<std::optional<int64_t>> dims;
};
std::optional<ShapeEval> eval_shape(const GraphIndex& g, const std::string& value, std::string& why);

// The nodes of a computation of `value` from tensor shapes and constants only
// (Shape, Gather, Concat, Reshape, ConstantOfShape, Equal, Where, arithmetic,
// ...), e.g. torch's target of an Expand, whose numbers are not needed. Fails
// when the computation reads the data of a graph input or of any other value
// than through Shape.
std::optional<std::vector<int>> shape_only_nodes(const GraphIndex& g, const std::string& value,
                                                 std::string& why);

// x -> Reshape [b, s, heads, head_dim] -> Transpose(perm), ending at `value`.
struct HeadSplit {
  std::vector<int> nodes;  // Reshape, Transpose(s) and the shape computation
  std::string x;           // the [b, s, hidden] input
  int64_t heads = 0, head_dim = 0;  // 0 when the target shape does not say
};
// Accepts `value` = Transpose(perm)(Reshape(x)), or for perm {0,2,3,1} also
// Transpose{0,1,3,2}(Transpose{0,2,1,3}(Reshape(x))).
std::optional<HeadSplit> match_head_split(const GraphIndex& g, const std::string& value,
                                          const std::vector<int64_t>& perm, std::string& why);

}  // namespace onnx_import
}  // namespace spinel

// A small evaluator for the parts of an ONNX graph whose meaning is easiest
// to check by computing them: subgraphs that depend on the sequence length
// (DNABERT-2's ALiBi bias: Range/Sub/Abs/Mul over arange(seq)), index
// shuffles (a fused Wqkv split into heads by Reshape/Gather/Slice/Transpose)
// and elementwise regions (a GEGLU gate). A recogniser binds values to
// concrete tensors (graph inputs of a chosen batch and length, or an
// intermediate filled with codes), evaluates another value and compares the
// numbers with what the pattern should compute, at several lengths.
//
// Values are N-d tensors of doubles. Every op computes its output shape; data
// is computed for the shape and elementwise ops listed in onnx_eval.cpp,
// while heavy ops (MatMul, Gemm, Softmax, LayerNormalization, reductions)
// give the shape only — enough for a Shape() of the hidden states, never for
// their numbers. A value whose data is needed but unknown is an error that
// names the node.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "converters/onnx_graph.h"

namespace spinel {
namespace onnx_import {

struct EvalTensor {
  std::vector<int64_t> dims;
  std::vector<double> v;   // row-major; empty when only the shape is known
  bool has_data = true;
  bool is_int = false;     // integer or bool element type (Div truncates)
  int64_t numel() const;
  static EvalTensor shape_only(std::vector<int64_t> dims, bool is_int = false);
};

class SubgraphEval {
 public:
  explicit SubgraphEval(const GraphIndex& g) : g_(g) {}

  // `value` holds `t`: evaluation stops there. Graph inputs that a
  // computation reaches must be bound.
  void bind(const std::string& value, EvalTensor t);

  // The tensor `value` holds; nullopt and `why` (naming the node) when an op
  // is not supported or a graph input is not bound. The result may lack data
  // (has_data false) when it depends on a heavy op.
  std::optional<EvalTensor> eval(const std::string& value, std::string& why);

  // The nodes whose results went into the data of `value` (not only into
  // shapes): what a pattern checked by evaluating `value` explains. Bound
  // values stop the walk. `inputs` receives the graph inputs whose data was
  // read (Shape() of an input is not a read).
  std::set<int> data_nodes(const std::string& value, std::set<std::string>* inputs = nullptr) const;

 private:
  bool eval_node(int n, std::string& why);
  const GraphIndex& g_;
  std::map<std::string, EvalTensor> memo_;
  std::set<std::string> bound_;
};

}  // namespace onnx_import
}  // namespace spinel

// A read-only index over an ONNX graph for pattern matching: who produces and
// who consumes each value, constant look-ups, and a "covered" mark per node so
// that every node not explained by a recognised pattern can be reported.
#pragma once

#include <onnx/onnx_pb.h>

#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "converters/onnx_tensors.h"

namespace spinel {
namespace onnx_import {

class GraphIndex {
 public:
  GraphIndex(const onnx::GraphProto& graph, const ConstantTable& consts);

  const onnx::GraphProto& graph() const { return graph_; }
  const ConstantTable& consts() const { return consts_; }
  int num_nodes() const { return graph_.node_size(); }
  const onnx::NodeProto& node(int i) const { return graph_.node(i); }
  // "name (Op: Type)" for messages; unnamed nodes are shown by their first output.
  std::string describe(int i) const;

  // Index of the node producing `value`, or -1 (graph input, initializer, unknown).
  int producer(const std::string& value) const;
  // Nodes reading `value`, once per node, in graph order.
  const std::vector<int>& consumers(const std::string& value) const;
  // Consumers other than Shape nodes: Shape only reads the dimensions, so it
  // does not keep an intermediate value alive in the fused IR.
  std::vector<int> data_consumers(const std::string& value) const;
  // The one node that reads `value` (Shape nodes aside), or -1 when there is
  // none, more than one, or the value is also a graph output.
  int sole_consumer(const std::string& value) const;
  bool is_graph_input(const std::string& value) const { return inputs_.count(value) != 0; }
  bool is_graph_output(const std::string& value) const { return outputs_.count(value) != 0; }

  // Producer of `value` when it has op type `op`, else -1.
  int producer_of_type(const std::string& value, const char* op) const;
  bool is_op(int node, const char* op) const;

  bool is_const(const std::string& value) const { return consts_.contains(value); }
  // The value of a constant holding exactly one element.
  std::optional<double> scalar(const std::string& value) const;

  // Attributes, with defaults.
  const onnx::AttributeProto* attr(int node, const char* name) const;
  int64_t attr_int(int node, const char* name, int64_t dflt) const;
  float attr_float(int node, const char* name, float dflt) const;
  std::optional<std::vector<int64_t>> attr_ints(int node, const char* name) const;

  // ReduceMean/Unsqueeze/Squeeze axes: attribute before opset 13/18, input after.
  std::optional<std::vector<int64_t>> axes_of(int node) const;

  void cover(int node) { covered_[node] = true; }
  void cover(const std::vector<int>& nodes) {
    for (int n : nodes) covered_[n] = true;
  }
  bool covered(int node) const { return covered_[node]; }
  // Marks Constant nodes (and Identity-of-constant nodes) covered when every
  // reader of their output is covered; returns the nodes still uncovered.
  std::vector<int> finish_coverage();

 private:
  void check_arity(int i) const;
  const onnx::GraphProto& graph_;
  const ConstantTable& consts_;
  std::unordered_map<std::string, int> producer_;
  std::unordered_map<std::string, std::vector<int>> consumers_;
  std::unordered_set<std::string> inputs_, outputs_;
  std::vector<bool> covered_;
  const std::vector<int> none_;
};

}  // namespace onnx_import
}  // namespace spinel

#include "converters/onnx_graph.h"

#include <map>

#include "runtime/error.h"

namespace spinel {
namespace onnx_import {

GraphIndex::GraphIndex(const onnx::GraphProto& graph, const ConstantTable& consts)
    : graph_(graph), consts_(consts), covered_(static_cast<size_t>(graph.node_size()), false) {
  for (const auto& v : graph.input()) {
    // Old exporters list initializers among the inputs too; those are constants.
    if (!consts.contains(v.name())) inputs_.insert(v.name());
  }
  for (const auto& v : graph.output()) outputs_.insert(v.name());
  // ONNX requires topological order; checking it here also guarantees that
  // every walk from a value to its producers ends (no cycles).
  for (int i = 0; i < graph.node_size(); ++i) {
    const onnx::NodeProto& n = graph.node(i);
    check_arity(i);
    for (const std::string& in : n.input()) {
      if (in.empty()) continue;  // omitted optional input
      if (!producer_.count(in) && !inputs_.count(in) && !consts.contains(in))
        fail("node ", describe(i), " reads '", in,
             "', which no earlier node, graph input or initializer provides");
      auto& c = consumers_[in];
      if (c.empty() || c.back() != i) c.push_back(i);
    }
    for (const std::string& out : n.output()) {
      if (out.empty()) continue;
      if (producer_.count(out)) fail("value '", out, "' is produced by two nodes");
      producer_[out] = i;
    }
  }
}

// The matchers read node inputs by position: a node of an op they know must
// have the inputs and the output ONNX requires of it (a crafted file may not).
void GraphIndex::check_arity(int i) const {
  static const std::map<std::string, int> kMinInputs = {
      {"Add", 2},       {"Sub", 2},        {"Mul", 2},       {"Div", 2},      {"Pow", 2},
      {"MatMul", 2},    {"Gather", 2},     {"Reshape", 2},   {"Expand", 2},   {"Range", 3},
      {"Slice", 3},     {"LayerNormalization", 2},            {"Cast", 1},     {"Concat", 1},
      {"Erf", 1},       {"Identity", 1},   {"Neg", 1},       {"ReduceMean", 1}, {"Shape", 1},
      {"Sigmoid", 1},   {"Softmax", 1},    {"Sqrt", 1},      {"Squeeze", 1},  {"Tanh", 1},
      {"Transpose", 1}, {"Unsqueeze", 1}, {"Gemm", 2},      {"Where", 3},    {"Equal", 2},
      {"ReduceSum", 1}, {"ReduceL2", 1},   {"Clip", 1},      {"Max", 1},      {"ConstantOfShape", 1},
      {"LpNormalization", 1}};
  const onnx::NodeProto& n = node(i);
  const bool std_domain = n.domain().empty() || n.domain() == "ai.onnx";
  auto it = kMinInputs.find(n.op_type());
  if (!std_domain || it == kMinInputs.end()) return;
  if (n.input_size() < it->second)
    fail("node ", describe(i), " has ", n.input_size(), " input(s); ", n.op_type(), " needs ",
         it->second);
  for (int k = 0; k < it->second; ++k)
    if (n.input(k).empty())
      fail("node ", describe(i), ": required input ", k, " is empty");
  if (n.output_size() < 1 || n.output(0).empty())
    fail("node ", describe(i), " has no output");
}

std::string GraphIndex::describe(int i) const {
  const onnx::NodeProto& n = node(i);
  std::string name = n.name();
  if (name.empty()) name = n.output_size() > 0 ? "<unnamed, output " + n.output(0) + ">" : "<unnamed>";
  std::string op = n.op_type();
  if (!n.domain().empty() && n.domain() != "ai.onnx") op = n.domain() + "." + op;
  return name + " (Op: " + op + ")";
}

int GraphIndex::producer(const std::string& value) const {
  auto it = producer_.find(value);
  return it == producer_.end() ? -1 : it->second;
}

const std::vector<int>& GraphIndex::consumers(const std::string& value) const {
  auto it = consumers_.find(value);
  return it == consumers_.end() ? none_ : it->second;
}

std::vector<int> GraphIndex::data_consumers(const std::string& value) const {
  std::vector<int> out;
  for (int c : consumers(value))
    if (!is_op(c, "Shape")) out.push_back(c);
  return out;
}

int GraphIndex::sole_consumer(const std::string& value) const {
  if (is_graph_output(value)) return -1;
  const std::vector<int> c = data_consumers(value);
  return c.size() == 1 ? c[0] : -1;
}

bool GraphIndex::is_op(int node, const char* op) const {
  if (node < 0) return false;
  const onnx::NodeProto& n = graph_.node(node);
  return n.op_type() == op && (n.domain().empty() || n.domain() == "ai.onnx");
}

int GraphIndex::producer_of_type(const std::string& value, const char* op) const {
  const int p = producer(value);
  return is_op(p, op) ? p : -1;
}

std::optional<double> GraphIndex::scalar(const std::string& value) const {
  if (!is_const(value)) return std::nullopt;
  const std::vector<int64_t> d = consts_.dims(value);
  int64_t n = 1;
  for (int64_t x : d) n *= x;
  if (n != 1) return std::nullopt;
  return consts_.value(value).values.at(0);
}

const onnx::AttributeProto* GraphIndex::attr(int node, const char* name) const {
  for (const auto& a : graph_.node(node).attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

int64_t GraphIndex::attr_int(int node, const char* name, int64_t dflt) const {
  const onnx::AttributeProto* a = attr(node, name);
  return a ? a->i() : dflt;
}

float GraphIndex::attr_float(int node, const char* name, float dflt) const {
  const onnx::AttributeProto* a = attr(node, name);
  return a ? a->f() : dflt;
}

std::optional<std::vector<int64_t>> GraphIndex::attr_ints(int node, const char* name) const {
  const onnx::AttributeProto* a = attr(node, name);
  if (!a) return std::nullopt;
  return std::vector<int64_t>(a->ints().begin(), a->ints().end());
}

std::optional<std::vector<int64_t>> GraphIndex::axes_of(int node) const {
  if (auto a = attr_ints(node, "axes")) return a;
  const onnx::NodeProto& n = graph_.node(node);
  if (n.input_size() >= 2 && is_const(n.input(1))) {
    std::vector<int64_t> axes;
    for (double v : consts_.value(n.input(1)).values) axes.push_back(static_cast<int64_t>(v));
    return axes;
  }
  return std::nullopt;
}

std::vector<int> GraphIndex::finish_coverage() {
  // Reverse graph order: an Identity's readers are settled before the Constant feeding it.
  for (int i = num_nodes() - 1; i >= 0; --i) {
    if (covered_[i]) continue;
    const onnx::NodeProto& n = node(i);
    const bool constant = is_op(i, "Constant") ||
                          (is_op(i, "Identity") && n.output_size() == 1 && is_const(n.output(0)));
    if (!constant) continue;
    bool all_covered = !is_graph_output(n.output(0));
    for (int c : consumers(n.output(0))) all_covered = all_covered && covered_[c];
    if (all_covered) covered_[i] = true;
  }
  std::vector<int> left;
  for (int i = 0; i < num_nodes(); ++i)
    if (!covered_[i]) left.push_back(i);
  return left;
}

}  // namespace onnx_import
}  // namespace spinel

#include "converters/onnx_float16.h"

#include <cstring>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "converters/onnx_tensors.h"
#include "runtime/error.h"
#include "runtime/util/file_io.h"

namespace spinel {
namespace onnx_import {
namespace {

using onnx::TensorProto;

bool is_half(int32_t t) { return t == TensorProto::FLOAT16 || t == TensorProto::BFLOAT16; }

// The 16-bit values of a FLOAT16/BFLOAT16 tensor: raw_data, external data, or
// int32_data (one value in the low 16 bits of each element).
std::vector<uint16_t> half_bits(const TensorProto& t, const std::string& model_dir) {
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 0) fail("tensor '", t.name(), "' has a negative dimension ", d);
    if (d != 0 && n > (int64_t{1} << 40) / d) fail("tensor '", t.name(), "' has more than 2^40 elements");
    n *= d;
  }
  std::vector<uint16_t> out(static_cast<size_t>(n));
  const uint64_t want = static_cast<uint64_t>(n) * 2;
  if (t.data_location() == TensorProto::EXTERNAL) {
    const ExternalRef ext = resolve_external_data(t, model_dir);  // length checked against the shape
    const RegularFile in(ext.path, "external data file");
    if (ext.offset > in.size() || want > in.size() - ext.offset)
      fail("tensor '", t.name(), "': external data ", ext.path, " is shorter than its ", want,
           " bytes at offset ", ext.offset);
    if (want) in.read_at(ext.offset, out.data(), want);
  } else if (t.has_raw_data()) {
    if (t.raw_data().size() != want)
      fail("tensor '", t.name(), "': raw_data holds ", t.raw_data().size(), " bytes, its shape needs ", want);
    if (want) std::memcpy(out.data(), t.raw_data().data(), want);
  } else {
    if (t.int32_data_size() != n)
      fail("tensor '", t.name(), "' holds ", t.int32_data_size(), " values, its shape needs ", n);
    for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = static_cast<uint16_t>(t.int32_data(static_cast<int>(i)));
  }
  return out;
}

void widen_tensor(TensorProto& t, const std::string& model_dir) {
  const std::vector<uint16_t> bits = half_bits(t, model_dir);
  const bool bf = t.data_type() == TensorProto::BFLOAT16;
  std::string raw(bits.size() * sizeof(float), '\0');
  for (size_t i = 0; i < bits.size(); ++i) {
    const float f = bf ? bfloat16_to_float(bits[i]) : half_to_float(bits[i]);
    std::memcpy(&raw[i * sizeof(float)], &f, sizeof(float));
  }
  t.clear_int32_data();
  t.clear_external_data();
  t.set_data_location(TensorProto::DEFAULT);
  t.set_data_type(TensorProto::FLOAT);
  t.set_raw_data(std::move(raw));
}

bool retype(onnx::ValueInfoProto& v) {
  if (!v.has_type() || !v.type().has_tensor_type()) return false;
  auto* tt = v.mutable_type()->mutable_tensor_type();
  if (!is_half(tt->elem_type())) return false;
  tt->set_elem_type(TensorProto::FLOAT);
  return true;
}

onnx::AttributeProto* find_attr(onnx::NodeProto& n, const char* name) {
  for (auto& a : *n.mutable_attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

bool is_default_domain(const onnx::NodeProto& n) { return n.domain().empty() || n.domain() == "ai.onnx"; }

// Output 0's element type when the op and its inputs tell it; 0 = unknown.
int32_t output_type(const onnx::NodeProto& n, const std::unordered_map<std::string, int32_t>& types) {
  if (!is_default_domain(n)) return 0;
  auto in = [&](int i) -> int32_t {
    if (i >= n.input_size()) return 0;
    auto it = types.find(n.input(i));
    return it == types.end() ? 0 : it->second;
  };
  const std::string& op = n.op_type();
  if (op == "Cast") {
    for (const auto& a : n.attribute())
      if (a.name() == "to") return static_cast<int32_t>(a.i());
    return 0;
  }
  if (op == "Shape" || op == "Size" || op == "NonZero" || op == "ArgMax" || op == "ArgMin")
    return TensorProto::INT64;
  if (op == "Equal" || op == "Less" || op == "Greater" || op == "LessOrEqual" || op == "GreaterOrEqual" ||
      op == "Not" || op == "And" || op == "Or" || op == "Xor" || op == "IsNaN" || op == "IsInf")
    return TensorProto::BOOL;
  if (op == "ConstantOfShape") {
    for (const auto& a : n.attribute())
      if (a.name() == "value") return a.t().data_type();
    return TensorProto::FLOAT;
  }
  if (op == "Where") return in(1);
  if (op == "CastLike") return in(1);
  static const std::unordered_set<std::string> keeps_type = {
      "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Erf", "Tanh", "Exp", "Log", "Neg", "Abs", "Sigmoid",
      "Relu", "Reciprocal", "Softmax", "LayerNormalization", "MatMul", "Gemm", "Reshape", "Transpose",
      "Unsqueeze", "Squeeze", "Slice", "Concat", "Gather", "Expand", "Identity", "Tile", "ReduceMean",
      "ReduceSum", "ReduceMax", "ReduceMin", "Flatten", "Max", "Min", "Clip", "Dropout", "Range", "Gelu"};
  return keeps_type.count(op) ? in(0) : 0;
}

bool has_subgraphs(const onnx::GraphProto& g) {
  for (const auto& n : g.node())
    for (const auto& a : n.attribute())
      if (a.type() == onnx::AttributeProto::GRAPH || a.type() == onnx::AttributeProto::GRAPHS) return true;
  return false;
}

void rename_value(onnx::GraphProto& g, const std::string& from, const std::string& to) {
  for (auto& n : *g.mutable_node()) {
    for (auto& s : *n.mutable_input())
      if (s == from) s = to;
    for (auto& s : *n.mutable_output())
      if (s == from) s = to;
  }
  for (auto& v : *g.mutable_value_info())
    if (v.name() == from) v.set_name(to);
}

}  // namespace

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // Inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {
    // Subnormal: normalise the mantissa.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

float bfloat16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

Float16Widening widen_float16(onnx::ModelProto& model, const std::string& model_dir) {
  Float16Widening w;
  onnx::GraphProto& g = *model.mutable_graph();

  // Anything of a 16-bit float type at all? Otherwise the model stays as it is.
  bool half = false;
  for (const auto& t : g.initializer()) half = half || is_half(t.data_type());
  for (const auto& v : g.input()) half = half || (v.type().has_tensor_type() && is_half(v.type().tensor_type().elem_type()));
  for (const auto& v : g.output()) half = half || (v.type().has_tensor_type() && is_half(v.type().tensor_type().elem_type()));
  for (const auto& n : g.node()) {
    if (!is_default_domain(n)) continue;
    for (const auto& a : n.attribute()) {
      if (n.op_type() == "Cast" && a.name() == "to" && is_half(static_cast<int32_t>(a.i()))) half = true;
      if (n.op_type() == "Constant" && a.name() == "value" && is_half(a.t().data_type())) half = true;
    }
  }
  if (!half) return w;

  for (auto& t : *g.mutable_initializer())
    if (is_half(t.data_type())) {
      widen_tensor(t, model_dir);
      ++w.tensors;
    }
  for (auto& n : *g.mutable_node()) {
    if (!is_default_domain(n)) continue;
    if (n.op_type() == "Constant") {
      if (auto* a = find_attr(n, "value"); a && is_half(a->t().data_type())) {
        widen_tensor(*a->mutable_t(), model_dir);
        ++w.tensors;
      }
    } else if (n.op_type() == "Cast") {
      if (auto* a = find_attr(n, "to"); a && is_half(static_cast<int32_t>(a->i()))) {
        a->set_i(TensorProto::FLOAT);
        ++w.casts_retargeted;
      }
    } else if (n.op_type() == "ConstantOfShape") {
      if (auto* a = find_attr(n, "value"); a && is_half(a->t().data_type())) {
        widen_tensor(*a->mutable_t(), model_dir);
        ++w.tensors;
      }
    }
  }
  for (auto& v : *g.mutable_input()) retype(v);
  for (auto& v : *g.mutable_output()) retype(v);
  for (auto& v : *g.mutable_value_info()) retype(v);

  // Drop the Casts that now go from float to float.
  if (has_subgraphs(g)) return w;  // names inside subgraphs are not followed
  std::unordered_map<std::string, int32_t> types;
  std::unordered_set<std::string> fixed;  // graph inputs, initializers: cannot be renamed
  for (const auto& v : g.input()) {
    fixed.insert(v.name());
    if (v.type().has_tensor_type()) types[v.name()] = v.type().tensor_type().elem_type();
  }
  for (const auto& t : g.initializer()) {
    fixed.insert(t.name());
    types[t.name()] = t.data_type();
  }
  std::unordered_set<std::string> outputs;
  for (const auto& v : g.output()) outputs.insert(v.name());

  std::vector<int> drop;
  for (int i = 0; i < g.node_size(); ++i) {
    onnx::NodeProto& n = *g.mutable_node(i);
    if (n.output_size() < 1) continue;
    if (is_default_domain(n) && n.op_type() == "Constant") {
      if (const auto* a = find_attr(n, "value")) types[n.output(0)] = a->t().data_type();
      continue;
    }
    const int32_t t = output_type(n, types);
    if (t != 0) types[n.output(0)] = t;
    if (!(is_default_domain(n) && n.op_type() == "Cast" && n.input_size() == 1 && n.output_size() == 1 &&
          t == TensorProto::FLOAT))
      continue;
    auto it = types.find(n.input(0));
    if (it == types.end() || it->second != TensorProto::FLOAT) continue;
    const std::string x = n.input(0), y = n.output(0);
    if (outputs.count(y)) {
      // The graph output keeps its name: the Cast's input takes it over.
      if (fixed.count(x) || outputs.count(x)) continue;
      n.clear_input();  // detach, so the rename does not make a self-loop
      rename_value(g, x, y);
    } else {
      n.clear_output();
      rename_value(g, y, x);
    }
    drop.push_back(i);
  }
  for (auto it = drop.rbegin(); it != drop.rend(); ++it)
    g.mutable_node()->DeleteSubrange(*it, 1);
  w.casts_removed = static_cast<int64_t>(drop.size());
  return w;
}

}  // namespace onnx_import
}  // namespace spinel

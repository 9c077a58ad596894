#include "converters/onnx_eval.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>

namespace spinel {
namespace onnx_import {
namespace {

using onnx::TensorProto;

// Results bigger than this keep their shape only: the patterns evaluated
// here never need the data of a tensor this large.
constexpr int64_t kMaxDataElements = int64_t{1} << 24;
// Constants larger than this are known by their shape only (see eval()).
constexpr int64_t kMaxConstValues = int64_t{1} << 16;

bool int_type(int32_t t) {
  return t != TensorProto::FLOAT && t != TensorProto::DOUBLE && t != TensorProto::FLOAT16 &&
         t != TensorProto::BFLOAT16;
}

int64_t product(const std::vector<int64_t>& d) {
  int64_t n = 1;
  for (int64_t x : d) n *= x;
  return n;
}

std::vector<int64_t> strides_of(const std::vector<int64_t>& d) {
  std::vector<int64_t> s(d.size(), 1);
  for (int i = static_cast<int>(d.size()) - 2; i >= 0; --i) s[i] = s[i + 1] * d[i + 1];
  return s;
}

std::optional<std::vector<int64_t>> broadcast(const std::vector<std::vector<int64_t>>& shapes) {
  size_t r = 0;
  for (const auto& s : shapes) r = std::max(r, s.size());
  std::vector<int64_t> out(r, 1);
  for (const auto& s : shapes)
    for (size_t i = 0; i < s.size(); ++i) {
      int64_t& o = out[r - s.size() + i];
      const int64_t d = s[i];
      if (d == o || d == 1) continue;
      if (o == 1) o = d;
      else return std::nullopt;
    }
  return out;
}

// Offset into a tensor of shape `in` (right-aligned in `out`) for the
// multi-index `idx` of the broadcast output.
int64_t bcast_offset(const std::vector<int64_t>& idx, const std::vector<int64_t>& in,
                     const std::vector<int64_t>& in_strides) {
  int64_t off = 0;
  const size_t shift = idx.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i)
    if (in[i] != 1) off += idx[shift + i] * in_strides[i];
  return off;
}

void next_index(std::vector<int64_t>& idx, const std::vector<int64_t>& dims) {
  for (int i = static_cast<int>(dims.size()) - 1; i >= 0; --i) {
    if (++idx[i] < dims[i]) return;
    idx[i] = 0;
  }
}

// Slice bounds such as INT64_MAX ("to the end") are not exact in double:
// clamp before converting.
std::vector<int64_t> as_ints(const EvalTensor& t) {
  constexpr double kBig = 4611686018427387904.0;  // 2^62
  std::vector<int64_t> r;
  for (double x : t.v) r.push_back(static_cast<int64_t>(std::clamp(x, -kBig, kBig)));
  return r;
}

double attr_tensor_scalar(const onnx::TensorProto& t, bool* ok) {
  *ok = true;
  if (t.float_data_size() == 1) return t.float_data(0);
  if (t.double_data_size() == 1) return t.double_data(0);
  if (t.int64_data_size() == 1) return static_cast<double>(t.int64_data(0));
  if (t.int32_data_size() == 1) return t.int32_data(0);
  const std::string& raw = t.raw_data();
  switch (t.data_type()) {
    case TensorProto::FLOAT:
      if (raw.size() == 4) { float f; std::memcpy(&f, raw.data(), 4); return f; }
      break;
    case TensorProto::DOUBLE:
      if (raw.size() == 8) { double f; std::memcpy(&f, raw.data(), 8); return f; }
      break;
    case TensorProto::INT64:
      if (raw.size() == 8) { int64_t i; std::memcpy(&i, raw.data(), 8); return static_cast<double>(i); }
      break;
    case TensorProto::INT32:
      if (raw.size() == 4) { int32_t i; std::memcpy(&i, raw.data(), 4); return i; }
      break;
    case TensorProto::BOOL:
    case TensorProto::UINT8:
      if (raw.size() == 1) return static_cast<unsigned char>(raw[0]);
      break;
    default: break;
  }
  *ok = false;
  return 0;
}

}  // namespace

int64_t EvalTensor::numel() const { return product(dims); }

EvalTensor EvalTensor::shape_only(std::vector<int64_t> dims, bool is_int) {
  EvalTensor t;
  t.dims = std::move(dims);
  t.has_data = false;
  t.is_int = is_int;
  return t;
}

void SubgraphEval::bind(const std::string& value, EvalTensor t) {
  memo_[value] = std::move(t);
  bound_.insert(value);
}

std::optional<EvalTensor> SubgraphEval::eval(const std::string& value, std::string& why) {
  // Iterative post-order over producers: graphs are deep (a 12-layer
  // encoder is thousands of nodes between a Shape and the inputs).
  std::vector<std::string> stack = {value};
  while (!stack.empty()) {
    const std::string v = stack.back();
    if (memo_.count(v)) {
      stack.pop_back();
      continue;
    }
    if (g_.is_const(v)) {
      // A weight matrix feeds a MatMul (or an embedding table a Gather) whose
      // result matters here only by its shape: taking its values would copy
      // every weight of the encoder into doubles, once per check (minutes for
      // a 117M model). Other constants (shapes, slopes, buffers) keep their
      // values.
      const std::vector<int64_t> cd = g_.consts().dims(v);
      bool weight_only = product(cd) > kMaxConstValues;
      for (int c : g_.consumers(v))
        weight_only = weight_only && (g_.is_op(c, "MatMul") || g_.is_op(c, "Gemm") || g_.is_op(c, "Gather"));
      if (weight_only) {
        memo_[v] = EvalTensor::shape_only(cd, int_type(g_.consts().elem_type(v)));
        stack.pop_back();
        continue;
      }
      const ConstValue c = g_.consts().value(v);
      EvalTensor t;
      t.dims = c.dims;
      t.v = c.values;
      t.is_int = int_type(c.elem_type);
      memo_[v] = std::move(t);
      stack.pop_back();
      continue;
    }
    const int p = g_.producer(v);
    if (p < 0) {
      why = g_.is_graph_input(v) ? "graph input '" + v + "' is read but has no value here"
                                 : "'" + v + "' is produced by no node";
      return std::nullopt;
    }
    bool ready = true;
    for (const std::string& in : g_.node(p).input())
      if (!in.empty() && !memo_.count(in)) {
        stack.push_back(in);
        ready = false;
      }
    if (!ready) continue;
    if (!eval_node(p, why)) return std::nullopt;
    if (!memo_.count(v)) {
      why = g_.describe(p) + " did not produce '" + v + "'";
      return std::nullopt;
    }
    stack.pop_back();
  }
  return memo_.at(value);
}

std::set<int> SubgraphEval::data_nodes(const std::string& value, std::set<std::string>* inputs) const {
  std::set<int> nodes;
  std::vector<std::string> stack = {value};
  std::set<std::string> seen;
  while (!stack.empty()) {
    const std::string v = stack.back();
    stack.pop_back();
    if (!seen.insert(v).second || g_.is_const(v)) continue;
    if (g_.is_graph_input(v)) {
      if (inputs) inputs->insert(v);
      continue;
    }
    const int p = g_.producer(v);
    if (bound_.count(v) || p < 0) continue;
    nodes.insert(p);
    if (g_.is_op(p, "Shape") || g_.is_op(p, "Size")) continue;  // reads dimensions only
    for (const std::string& in : g_.node(p).input())
      if (!in.empty()) stack.push_back(in);
  }
  return nodes;
}

bool SubgraphEval::eval_node(int n, std::string& why) {
  const onnx::NodeProto& node = g_.node(n);
  const std::string& op = node.op_type();
  auto fail = [&](const std::string& msg) {
    why = g_.describe(n) + ": " + msg;
    return false;
  };
  if (!node.domain().empty() && node.domain() != "ai.onnx") return fail("op domain '" + node.domain() + "' is not evaluated");
  std::vector<const EvalTensor*> in;
  for (const std::string& name : node.input()) in.push_back(name.empty() ? nullptr : &memo_.at(name));
  auto arg = [&](size_t i) -> const EvalTensor* { return i < in.size() ? in[i] : nullptr; };
  auto need_data = [&](size_t i) {
    return arg(i) && arg(i)->has_data;
  };
  auto out = [&](EvalTensor t, int i = 0) {
    if (t.has_data && t.numel() > kMaxDataElements) {
      t.v.clear();
      t.has_data = false;
    }
    memo_[node.output(i)] = std::move(t);
    return true;
  };
  auto axis_norm = [](int64_t a, size_t rank) { return a < 0 ? a + static_cast<int64_t>(rank) : a; };

  static const std::map<std::string, std::function<double(double)>> kUnary = {
      {"Identity", [](double x) { return x; }},
      {"Neg", [](double x) { return -x; }},
      {"Abs", [](double x) { return std::fabs(x); }},
      {"Sqrt", [](double x) { return std::sqrt(x); }},
      {"Erf", [](double x) { return std::erf(x); }},
      {"Tanh", [](double x) { return std::tanh(x); }},
      {"Exp", [](double x) { return std::exp(x); }},
      {"Floor", [](double x) { return std::floor(x); }},
      {"Ceil", [](double x) { return std::ceil(x); }},
      {"Not", [](double x) { return x == 0 ? 1.0 : 0.0; }},
      {"Sigmoid", [](double x) { return 1.0 / (1.0 + std::exp(-x)); }},
      {"Reciprocal", [](double x) { return 1.0 / x; }},
      {"Relu", [](double x) { return x > 0 ? x : 0.0; }},
  };
  if (auto u = kUnary.find(op); u != kUnary.end()) {
    const EvalTensor& x = *arg(0);
    EvalTensor t = x;
    if (x.has_data)
      for (double& v : t.v) v = u->second(v);
    if (op == "Not") t.is_int = true;
    return out(std::move(t));
  }
  if (op == "Cast") {
    const int64_t to = g_.attr_int(n, "to", TensorProto::FLOAT);
    EvalTensor t = *arg(0);
    t.is_int = int_type(static_cast<int32_t>(to));
    if (t.has_data && t.is_int) {
      for (double& v : t.v) v = to == TensorProto::BOOL ? (v != 0 ? 1.0 : 0.0) : std::trunc(v);
    } else if (t.has_data && to == TensorProto::FLOAT) {
      for (double& v : t.v) v = static_cast<float>(v);
    }
    return out(std::move(t));
  }
  static const std::set<std::string> kBinary = {"Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less",
                                                "Greater", "LessOrEqual", "GreaterOrEqual", "And",
                                                "Or", "Max", "Min", "Mod"};
  if (kBinary.count(op) || op == "Where") {
    const size_t k = op == "Where" ? 3 : 2;
    if (in.size() != k) return fail("expected " + std::to_string(k) + " inputs");
    std::vector<std::vector<int64_t>> shapes;
    for (size_t i = 0; i < k; ++i) shapes.push_back(in[i]->dims);
    auto od = broadcast(shapes);
    if (!od) return fail("input shapes do not broadcast");
    const bool cmp = op == "Equal" || op == "Less" || op == "Greater" || op == "LessOrEqual" ||
                     op == "GreaterOrEqual" || op == "And" || op == "Or";
    const bool is_int = cmp || (op == "Where" ? in[1]->is_int && in[2]->is_int : in[0]->is_int && in[1]->is_int);
    bool data = true;
    for (size_t i = 0; i < k; ++i) data = data && in[i]->has_data;
    if (!data || product(*od) > kMaxDataElements) return out(EvalTensor::shape_only(*od, is_int));
    EvalTensor t;
    t.dims = *od;
    t.is_int = is_int;
    t.v.resize(static_cast<size_t>(product(*od)));
    std::vector<std::vector<int64_t>> st;
    for (size_t i = 0; i < k; ++i) st.push_back(strides_of(in[i]->dims));
    std::vector<int64_t> idx(od->size(), 0);
    const bool int_div = op == "Div" && is_int;
    for (size_t e = 0; e < t.v.size(); ++e, next_index(idx, *od)) {
      const double a = in[0]->v[static_cast<size_t>(bcast_offset(idx, in[0]->dims, st[0]))];
      const double b = in[1]->v[static_cast<size_t>(bcast_offset(idx, in[1]->dims, st[1]))];
      double r = 0;
      if (op == "Where") {
        const double c = in[2]->v[static_cast<size_t>(bcast_offset(idx, in[2]->dims, st[2]))];
        r = a != 0 ? b : c;
      } else if (op == "Add") r = a + b;
      else if (op == "Sub") r = a - b;
      else if (op == "Mul") r = a * b;
      else if (op == "Div") r = int_div ? (b != 0 ? std::trunc(a / b) : 0) : a / b;
      else if (op == "Pow") r = std::pow(a, b);
      else if (op == "Equal") r = a == b;
      else if (op == "Less") r = a < b;
      else if (op == "Greater") r = a > b;
      else if (op == "LessOrEqual") r = a <= b;
      else if (op == "GreaterOrEqual") r = a >= b;
      else if (op == "And") r = (a != 0) && (b != 0);
      else if (op == "Or") r = (a != 0) || (b != 0);
      else if (op == "Max") r = std::max(a, b);
      else if (op == "Min") r = std::min(a, b);
      else if (op == "Mod") r = b != 0 ? a - b * std::floor(a / b) : 0;
      t.v[e] = r;
    }
    return out(std::move(t));
  }
  if (op == "Shape" || op == "Size") {
    const std::vector<int64_t>& d = arg(0)->dims;
    EvalTensor t;
    t.is_int = true;
    if (op == "Size") {
      t.v = {static_cast<double>(product(d))};
      return out(std::move(t));
    }
    const int64_t r = static_cast<int64_t>(d.size());
    int64_t s = g_.attr_int(n, "start", 0), e = g_.attr_int(n, "end", r);
    if (s < 0) s += r;
    if (e < 0) e += r;
    s = std::clamp<int64_t>(s, 0, r);
    e = std::clamp<int64_t>(e, 0, r);
    for (int64_t i = s; i < e; ++i) t.v.push_back(static_cast<double>(d[static_cast<size_t>(i)]));
    t.dims = {static_cast<int64_t>(t.v.size())};
    return out(std::move(t));
  }
  if (op == "ConstantOfShape") {
    if (!need_data(0)) return fail("the shape is not known");
    double fill = 0;
    bool is_int = false;
    if (const onnx::AttributeProto* a = g_.attr(n, "value")) {
      bool ok = false;
      fill = attr_tensor_scalar(a->t(), &ok);
      if (!ok) return fail("fill value is not one number");
      is_int = int_type(a->t().data_type());
    }
    EvalTensor t;
    t.dims = as_ints(*arg(0));
    t.is_int = is_int;
    if (product(t.dims) > kMaxDataElements) return out(EvalTensor::shape_only(t.dims, is_int));
    t.v.assign(static_cast<size_t>(product(t.dims)), fill);
    return out(std::move(t));
  }
  if (op == "Range") {
    if (!need_data(0) || !need_data(1) || !need_data(2)) return fail("bounds are not known");
    const double s = arg(0)->v.at(0), l = arg(1)->v.at(0), d = arg(2)->v.at(0);
    if (d == 0) return fail("step 0");
    EvalTensor t;
    t.is_int = arg(0)->is_int && arg(1)->is_int && arg(2)->is_int;
    const int64_t cnt = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((l - s) / d)));
    if (cnt > kMaxDataElements) return fail("range too long");
    for (int64_t i = 0; i < cnt; ++i) t.v.push_back(s + static_cast<double>(i) * d);
    t.dims = {cnt};
    return out(std::move(t));
  }
  // Axes from the attribute (older opsets) or input `i` (newer).
  auto axes_from = [&](size_t i) -> std::optional<std::vector<int64_t>> {
    if (auto a = g_.attr_ints(n, "axes")) return a;
    if (arg(i)) {
      if (!arg(i)->has_data) return std::nullopt;
      return as_ints(*arg(i));
    }
    return std::vector<int64_t>{};
  };
  if (op == "Unsqueeze" || op == "Squeeze") {
    auto axes = axes_from(1);
    if (!axes) return fail("axes are not known");
    EvalTensor t = *arg(0);
    if (op == "Unsqueeze") {
      const size_t r = t.dims.size() + axes->size();
      std::vector<int64_t> ax;
      for (int64_t a : *axes) ax.push_back(axis_norm(a, r));
      std::sort(ax.begin(), ax.end());
      for (int64_t a : ax) t.dims.insert(t.dims.begin() + a, 1);
    } else {
      std::vector<int64_t> ax;
      for (int64_t a : *axes) ax.push_back(axis_norm(a, t.dims.size()));
      std::vector<int64_t> d;
      for (size_t i = 0; i < t.dims.size(); ++i) {
        const bool drop = ax.empty() ? t.dims[i] == 1
                                     : std::find(ax.begin(), ax.end(), static_cast<int64_t>(i)) != ax.end();
        if (drop && t.dims[i] != 1) return fail("squeezes a dimension of size " + std::to_string(t.dims[i]));
        if (!drop) d.push_back(t.dims[i]);
      }
      t.dims = d;
    }
    return out(std::move(t));
  }
  if (op == "Reshape") {
    if (!need_data(1)) return fail("the target shape is not known");
    std::vector<int64_t> d = as_ints(*arg(1));
    const EvalTensor& x = *arg(0);
    int64_t known = 1, infer = -1;
    for (size_t i = 0; i < d.size(); ++i) {
      if (d[i] == 0 && g_.attr_int(n, "allowzero", 0) == 0) {
        if (i >= x.dims.size()) return fail("0 in the target copies a missing dimension");
        d[i] = x.dims[i];
      }
      if (d[i] == -1) {
        if (infer >= 0) return fail("two -1 in the target shape");
        infer = static_cast<int64_t>(i);
      } else {
        known *= d[i];
      }
    }
    if (infer >= 0) {
      if (known == 0 || x.numel() % known != 0) return fail("cannot infer the -1 dimension");
      d[static_cast<size_t>(infer)] = x.numel() / known;
    }
    if (product(d) != x.numel()) return fail("target shape does not hold the element count");
    EvalTensor t = x;
    t.dims = d;
    return out(std::move(t));
  }
  if (op == "Transpose") {
    const EvalTensor& x = *arg(0);
    std::vector<int64_t> perm;
    if (auto p = g_.attr_ints(n, "perm")) perm = *p;
    else
      for (int64_t i = static_cast<int64_t>(x.dims.size()) - 1; i >= 0; --i) perm.push_back(i);
    if (perm.size() != x.dims.size()) return fail("perm does not match the rank");
    std::vector<int64_t> od;
    for (int64_t p : perm) od.push_back(x.dims[static_cast<size_t>(p)]);
    if (!x.has_data) return out(EvalTensor::shape_only(od, x.is_int));
    EvalTensor t;
    t.dims = od;
    t.is_int = x.is_int;
    t.v.resize(x.v.size());
    const std::vector<int64_t> xs = strides_of(x.dims);
    std::vector<int64_t> idx(od.size(), 0);
    for (size_t e = 0; e < t.v.size(); ++e, next_index(idx, od)) {
      int64_t off = 0;
      for (size_t i = 0; i < perm.size(); ++i) off += idx[i] * xs[static_cast<size_t>(perm[i])];
      t.v[e] = x.v[static_cast<size_t>(off)];
    }
    return out(std::move(t));
  }
  if (op == "Gather") {
    const EvalTensor& x = *arg(0);
    const EvalTensor& ind = *arg(1);
    const int64_t axis = axis_norm(g_.attr_int(n, "axis", 0), x.dims.size());
    if (axis < 0 || axis >= static_cast<int64_t>(x.dims.size())) return fail("axis out of range");
    std::vector<int64_t> od(x.dims.begin(), x.dims.begin() + axis);
    od.insert(od.end(), ind.dims.begin(), ind.dims.end());
    od.insert(od.end(), x.dims.begin() + axis + 1, x.dims.end());
    if (!x.has_data || !ind.has_data || product(od) > kMaxDataElements)
      return out(EvalTensor::shape_only(od, x.is_int));
    const int64_t outer = product(std::vector<int64_t>(x.dims.begin(), x.dims.begin() + axis));
    const int64_t inner = product(std::vector<int64_t>(x.dims.begin() + axis + 1, x.dims.end()));
    const int64_t ax = x.dims[static_cast<size_t>(axis)];
    EvalTensor t;
    t.dims = od;
    t.is_int = x.is_int;
    for (int64_t o = 0; o < outer; ++o)
      for (double iv : ind.v) {
        int64_t i = static_cast<int64_t>(iv);
        if (i < 0) i += ax;
        if (i < 0 || i >= ax) return fail("index " + std::to_string(i) + " out of range");
        for (int64_t k = 0; k < inner; ++k) t.v.push_back(x.v[static_cast<size_t>((o * ax + i) * inner + k)]);
      }
    return out(std::move(t));
  }
  if (op == "Concat") {
    const int64_t axis0 = g_.attr_int(n, "axis", 0);
    const EvalTensor& f = *arg(0);
    const int64_t axis = axis_norm(axis0, f.dims.size());
    std::vector<int64_t> od = f.dims;
    od[static_cast<size_t>(axis)] = 0;
    bool data = true, is_int = true;
    for (const EvalTensor* x : in) {
      if (x->dims.size() != f.dims.size()) return fail("inputs of different rank");
      od[static_cast<size_t>(axis)] += x->dims[static_cast<size_t>(axis)];
      data = data && x->has_data;
      is_int = is_int && x->is_int;
    }
    if (!data) return out(EvalTensor::shape_only(od, is_int));
    const int64_t outer = product(std::vector<int64_t>(f.dims.begin(), f.dims.begin() + axis));
    EvalTensor t;
    t.dims = od;
    t.is_int = is_int;
    for (int64_t o = 0; o < outer; ++o)
      for (const EvalTensor* x : in) {
        const int64_t chunk = product(std::vector<int64_t>(x->dims.begin() + axis, x->dims.end()));
        t.v.insert(t.v.end(), x->v.begin() + o * chunk, x->v.begin() + (o + 1) * chunk);
      }
    return out(std::move(t));
  }
  if (op == "Slice" || op == "Split") {
    const EvalTensor& x = *arg(0);
    const size_t r = x.dims.size();
    // Per output: per-axis [start, step, count].
    struct Range1 {
      int64_t start, step, count;
    };
    std::vector<std::vector<Range1>> outs;
    auto full = [&] {
      std::vector<Range1> v;
      for (int64_t d : x.dims) v.push_back({0, 1, d});
      return v;
    };
    if (op == "Slice") {
      std::vector<int64_t> starts, ends, axes, steps;
      if (g_.attr_ints(n, "starts")) {  // opset < 10
        starts = *g_.attr_ints(n, "starts");
        ends = *g_.attr_ints(n, "ends");
        if (auto a = g_.attr_ints(n, "axes")) axes = *a;
      } else {
        for (size_t i = 1; i < in.size(); ++i)
          if (arg(i) && !arg(i)->has_data) return fail("bounds are not known");
        starts = as_ints(*arg(1));
        ends = as_ints(*arg(2));
        if (arg(3)) axes = as_ints(*arg(3));
        if (arg(4)) steps = as_ints(*arg(4));
      }
      if (axes.empty())
        for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
      if (steps.empty()) steps.assign(starts.size(), 1);
      if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
        return fail("starts, ends, axes and steps differ in length");
      std::vector<Range1> v = full();
      for (size_t i = 0; i < starts.size(); ++i) {
        const int64_t a = axis_norm(axes[i], r);
        if (a < 0 || a >= static_cast<int64_t>(r)) return fail("axis out of range");
        const int64_t d = x.dims[static_cast<size_t>(a)], st = steps[i];
        if (st == 0) return fail("step 0");
        int64_t s = starts[i], e = ends[i];
        if (s < 0) s += d;
        if (e < 0) e += d;
        if (st > 0) {
          s = std::clamp<int64_t>(s, 0, d);
          e = std::clamp<int64_t>(e, 0, d);
        } else {
          s = std::clamp<int64_t>(s, 0, d - 1);
          e = std::clamp<int64_t>(e, -1, d - 1);
        }
        const int64_t cnt = st > 0 ? std::max<int64_t>(0, (e - s + st - 1) / st)
                                   : std::max<int64_t>(0, (s - e + (-st) - 1) / (-st));
        v[static_cast<size_t>(a)] = {s, st, cnt};
      }
      outs.push_back(v);
    } else {
      const int64_t a = axis_norm(g_.attr_int(n, "axis", 0), r);
      if (a < 0 || a >= static_cast<int64_t>(r)) return fail("axis out of range");
      std::vector<int64_t> sizes;
      if (auto s = g_.attr_ints(n, "split")) sizes = *s;
      else if (arg(1)) {
        if (!arg(1)->has_data) return fail("split sizes are not known");
        sizes = as_ints(*arg(1));
      } else {
        const int64_t k = node.output_size(), d = x.dims[static_cast<size_t>(a)];
        const int64_t each = (d + k - 1) / k;
        for (int64_t i = 0; i < k; ++i) sizes.push_back(std::min(each, d - i * each));
      }
      if (static_cast<int>(sizes.size()) != node.output_size()) return fail("split sizes do not match the outputs");
      int64_t at = 0;
      for (int64_t s : sizes) {
        std::vector<Range1> v = full();
        v[static_cast<size_t>(a)] = {at, 1, s};
        at += s;
        outs.push_back(v);
      }
      if (at != x.dims[static_cast<size_t>(a)]) return fail("split sizes do not add up to the axis");
    }
    const std::vector<int64_t> xs = strides_of(x.dims);
    for (size_t o = 0; o < outs.size(); ++o) {
      std::vector<int64_t> od;
      for (const Range1& q : outs[o]) od.push_back(q.count);
      if (!x.has_data) {
        out(EvalTensor::shape_only(od, x.is_int), static_cast<int>(o));
        continue;
      }
      EvalTensor t;
      t.dims = od;
      t.is_int = x.is_int;
      t.v.resize(static_cast<size_t>(product(od)));
      std::vector<int64_t> idx(od.size(), 0);
      for (size_t e = 0; e < t.v.size(); ++e, next_index(idx, od)) {
        int64_t off = 0;
        for (size_t i = 0; i < r; ++i) off += (outs[o][i].start + idx[i] * outs[o][i].step) * xs[i];
        t.v[e] = x.v[static_cast<size_t>(off)];
      }
      out(std::move(t), static_cast<int>(o));
    }
    return true;
  }
  if (op == "Expand") {
    if (!need_data(1)) return fail("the target shape is not known");
    const EvalTensor& x = *arg(0);
    auto od = broadcast({x.dims, as_ints(*arg(1))});
    if (!od) return fail("shape does not broadcast");
    if (!x.has_data || product(*od) > kMaxDataElements) return out(EvalTensor::shape_only(*od, x.is_int));
    EvalTensor t;
    t.dims = *od;
    t.is_int = x.is_int;
    t.v.resize(static_cast<size_t>(product(*od)));
    const std::vector<int64_t> xs = strides_of(x.dims);
    std::vector<int64_t> idx(od->size(), 0);
    for (size_t e = 0; e < t.v.size(); ++e, next_index(idx, *od))
      t.v[e] = x.v[static_cast<size_t>(bcast_offset(idx, x.dims, xs))];
    return out(std::move(t));
  }
  // Heavy ops: the shape only.
  if (op == "MatMul") {
    const std::vector<int64_t>& a = arg(0)->dims;
    const std::vector<int64_t>& b = arg(1)->dims;
    if (a.size() < 2 || b.size() < 2) return fail("vector MatMul is not evaluated");
    auto batch = broadcast({std::vector<int64_t>(a.begin(), a.end() - 2), std::vector<int64_t>(b.begin(), b.end() - 2)});
    if (!batch || a.back() != b[b.size() - 2]) return fail("shapes do not multiply");
    batch->push_back(a[a.size() - 2]);
    batch->push_back(b.back());
    return out(EvalTensor::shape_only(*batch));
  }
  if (op == "Gemm") {
    const std::vector<int64_t>& a = arg(0)->dims;
    const std::vector<int64_t>& b = arg(1)->dims;
    if (a.size() != 2 || b.size() != 2) return fail("Gemm of non-matrices");
    const int64_t m = g_.attr_int(n, "transA", 0) ? a[1] : a[0];
    const int64_t nn = g_.attr_int(n, "transB", 0) ? b[0] : b[1];
    return out(EvalTensor::shape_only({m, nn}));
  }
  if (op == "Softmax" || op == "LayerNormalization" || op == "Dropout") {
    EvalTensor t = EvalTensor::shape_only(arg(0)->dims);
    for (int i = 0; i < node.output_size(); ++i)
      if (!node.output(i).empty()) memo_[node.output(i)] = t;
    return true;
  }
  if (op == "ReduceMean" || op == "ReduceSum" || op == "ReduceMax") {
    auto axes = axes_from(1);
    if (!axes) return fail("axes are not known");
    std::vector<int64_t> d = arg(0)->dims;
    const bool keep = g_.attr_int(n, "keepdims", 1) != 0;
    std::vector<int64_t> ax;
    for (int64_t a : *axes) ax.push_back(axis_norm(a, d.size()));
    if (ax.empty())
      for (size_t i = 0; i < d.size(); ++i) ax.push_back(static_cast<int64_t>(i));
    std::vector<int64_t> od;
    for (size_t i = 0; i < d.size(); ++i) {
      const bool red = std::find(ax.begin(), ax.end(), static_cast<int64_t>(i)) != ax.end();
      if (!red) od.push_back(d[i]);
      else if (keep) od.push_back(1);
    }
    return out(EvalTensor::shape_only(od));
  }
  return fail("op " + op + " is not evaluated");
}

}  // namespace onnx_import
}  // namespace spinel

#include "converters/onnx_patterns.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <set>

namespace spinel {
namespace onnx_import {
namespace {

using onnx::TensorProto;

// The input of two-input `node` that is not `known` ("" when both are).
std::string other_input(const GraphIndex& g, int node, const std::string& known) {
  const onnx::NodeProto& n = g.node(node);
  if (n.input_size() != 2) return "";
  if (n.input(0) == known && n.input(1) != known) return n.input(1);
  if (n.input(1) == known && n.input(0) != known) return n.input(0);
  return "";
}

int64_t numel(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

// A float constant that is one vector of `n` values ([n], or [1, .., n]).
bool is_vector_const(const GraphIndex& g, const std::string& v, int64_t n) {
  if (!g.is_const(v) || g.consts().elem_type(v) != TensorProto::FLOAT) return false;
  const std::vector<int64_t> d = g.consts().dims(v);
  return !d.empty() && d.back() == n && numel(d) == n;
}

bool last_axis_only(const std::optional<std::vector<int64_t>>& axes) {
  // Hidden states are [batch, seq, hidden]: the last axis is -1 or 2.
  return axes && axes->size() == 1 && ((*axes)[0] == -1 || (*axes)[0] == 2);
}

template <typename T>
std::optional<T> miss(std::string& why, const std::string& msg) {
  why = msg;
  return std::nullopt;
}

}  // namespace

std::optional<LinearMatch> match_linear(const GraphIndex& g, int matmul, std::string& why) {
  if (!g.is_op(matmul, "MatMul") || g.node(matmul).input_size() != 2)
    return miss<LinearMatch>(why, "expected a MatMul");
  const onnx::NodeProto& n = g.node(matmul);
  const std::string& w = n.input(1);
  if (!g.is_const(w)) return miss<LinearMatch>(why, g.describe(matmul) + ": B is not a constant weight");
  const std::vector<int64_t> wd = g.consts().dims(w);
  if (wd.size() != 2 || g.consts().elem_type(w) != TensorProto::FLOAT)
    return miss<LinearMatch>(why, g.describe(matmul) + ": weight '" + w + "' is not a 2-D float tensor");
  if (g.is_const(n.input(0)))
    return miss<LinearMatch>(why, g.describe(matmul) + ": both inputs are constants");
  LinearMatch m;
  m.matmul = matmul;
  m.nodes = {matmul};
  m.x = n.input(0);
  m.weight = w;
  m.in_features = wd[0];
  m.out_features = wd[1];
  m.out = n.output(0);
  const int add = g.sole_consumer(m.out);
  if (g.is_op(add, "Add")) {
    const std::string b = other_input(g, add, m.out);
    if (!b.empty() && is_vector_const(g, b, m.out_features)) {
      m.bias = b;
      m.nodes.push_back(add);
      m.out = g.node(add).output(0);
    }
  }
  return m;
}

std::optional<LinearMatch> match_linear_producing(const GraphIndex& g, const std::string& value,
                                                  std::string& why) {
  int mm = g.producer_of_type(value, "MatMul");
  const int add = g.producer_of_type(value, "Add");
  if (add >= 0) {
    for (const std::string& in : g.node(add).input())
      if (g.is_op(g.producer(in), "MatMul")) mm = g.producer(in);
  }
  if (mm < 0) return miss<LinearMatch>(why, "'" + value + "' is not the result of a MatMul (+ bias)");
  auto m = match_linear(g, mm, why);
  if (m && m->out != value)
    return miss<LinearMatch>(why, g.describe(mm) + ": its result is used elsewhere before '" + value + "'");
  return m;
}

std::optional<LayerNormMatch> match_layernorm(const GraphIndex& g, const std::string& x,
                                              std::string& why) {
  const std::string at = "LayerNorm of '" + x + "': ";
  const std::vector<int> readers = g.data_consumers(x);
  if (g.is_graph_output(x)) return miss<LayerNormMatch>(why, at + "input is also a graph output");
  LayerNormMatch m;
  m.x = x;

  // opset >= 17: one LayerNormalization node.
  if (readers.size() == 1 && g.is_op(readers[0], "LayerNormalization")) {
    const int ln = readers[0];
    const onnx::NodeProto& n = g.node(ln);
    if (n.input_size() < 2 || n.input(0) != x) return miss<LayerNormMatch>(why, at + g.describe(ln) + ": x is not input 0");
    const int64_t axis = g.attr_int(ln, "axis", -1);
    if (axis != -1 && axis != 2) return miss<LayerNormMatch>(why, g.describe(ln) + ": normalises over axis " + std::to_string(axis));
    for (int o = 1; o < n.output_size(); ++o)
      if (!n.output(o).empty() && !g.consumers(n.output(o)).empty())
        return miss<LayerNormMatch>(why, g.describe(ln) + ": mean/inv-std outputs are used");
    m.gamma = n.input(1);
    m.beta = n.input_size() > 2 ? n.input(2) : "";
    if (!g.is_const(m.gamma) || (!m.beta.empty() && !g.is_const(m.beta)))
      return miss<LayerNormMatch>(why, g.describe(ln) + ": scale/bias are not constants");
    m.eps = g.attr_float(ln, "epsilon", 1e-5f);
    m.out = n.output(0);
    m.nodes = {ln};
    m.fused = true;
    return m;
  }

  // Older opsets: ReduceMean -> Sub -> Pow(2) -> ReduceMean -> Add(eps) -> Sqrt -> Div -> Mul -> Add.
  int rm1 = -1, sub = -1;
  for (int r : readers) {
    if (g.is_op(r, "ReduceMean")) rm1 = r;
    if (g.is_op(r, "Sub")) sub = r;
  }
  if (readers.size() != 2 || rm1 < 0 || sub < 0)
    return miss<LayerNormMatch>(why, at + "not read by exactly one ReduceMean and one Sub (or a LayerNormalization)");
  auto bad = [&](int node, const std::string& what) {
    return miss<LayerNormMatch>(why, at + (node >= 0 ? g.describe(node) + ": " : "") + what);
  };
  if (!last_axis_only(g.axes_of(rm1)) || g.attr_int(rm1, "keepdims", 1) != 1) return bad(rm1, "not a mean over the last axis");
  const onnx::NodeProto& subn = g.node(sub);
  if (subn.input(0) != x || subn.input(1) != g.node(rm1).output(0)) return bad(sub, "expected x - mean");
  const std::string centered = subn.output(0);
  const std::vector<int> cr = g.data_consumers(centered);
  int pow = -1, div = -1;
  for (int r : cr) {
    if (g.is_op(r, "Pow")) pow = r;
    if (g.is_op(r, "Div")) div = r;
  }
  if (cr.size() != 2 || pow < 0 || div < 0) return bad(sub, "x - mean is not read by one Pow and one Div");
  if (g.node(pow).input(0) != centered || g.scalar(g.node(pow).input(1)) != 2.0) return bad(pow, "expected (x - mean)^2");
  const int rm2 = g.sole_consumer(g.node(pow).output(0));
  if (!g.is_op(rm2, "ReduceMean") || !last_axis_only(g.axes_of(rm2)) || g.attr_int(rm2, "keepdims", 1) != 1)
    return bad(pow, "variance is not a ReduceMean over the last axis");
  const std::string var = g.node(rm2).output(0);
  const int add_eps = g.sole_consumer(var);
  const std::string eps_v = g.is_op(add_eps, "Add") ? other_input(g, add_eps, var) : "";
  const auto eps = eps_v.empty() ? std::nullopt : g.scalar(eps_v);
  if (!eps) return bad(rm2, "variance is not followed by Add(epsilon)");
  const int sqrt = g.sole_consumer(g.node(add_eps).output(0));
  if (!g.is_op(sqrt, "Sqrt")) return bad(add_eps, "not followed by Sqrt");
  const onnx::NodeProto& divn = g.node(div);
  if (divn.input(0) != centered || divn.input(1) != g.node(sqrt).output(0) || g.sole_consumer(g.node(sqrt).output(0)) != div)
    return bad(div, "expected (x - mean) / sqrt(var + eps)");
  const std::string normed = divn.output(0);
  const int mul = g.sole_consumer(normed);
  m.gamma = g.is_op(mul, "Mul") ? other_input(g, mul, normed) : "";
  if (m.gamma.empty() || !g.is_const(m.gamma)) return bad(div, "not followed by Mul(gamma)");
  const std::string scaled = g.node(mul).output(0);
  const int addb = g.sole_consumer(scaled);
  m.beta = g.is_op(addb, "Add") ? other_input(g, addb, scaled) : "";
  if (m.beta.empty() || !g.is_const(m.beta)) return bad(mul, "not followed by Add(beta)");
  m.eps = static_cast<float>(*eps);
  m.out = g.node(addb).output(0);
  m.nodes = {rm1, sub, pow, rm2, add_eps, sqrt, div, mul, addb};
  return m;
}

std::optional<GeluMatch> match_gelu(const GraphIndex& g, const std::string& x, std::string& why) {
  static const std::set<std::string> kElementwise = {"Add", "Sub", "Mul", "Div", "Pow", "Erf",
                                                     "Tanh", "Sqrt", "Neg", "Sigmoid", "Exp"};
  auto elementwise = [&](int n) {
    const onnx::NodeProto& node = g.node(n);
    return (node.domain().empty() || node.domain() == "ai.onnx") && kElementwise.count(node.op_type()) != 0;
  };
  const std::string at = "activation after '" + x + "': ";
  // Forward closure of elementwise readers.
  std::set<int> region;
  std::vector<std::string> frontier = {x};
  while (!frontier.empty()) {
    const std::string v = frontier.back();
    frontier.pop_back();
    for (int c : g.data_consumers(v)) {
      if (!elementwise(c) || region.count(c)) continue;
      region.insert(c);
      frontier.push_back(g.node(c).output(0));
    }
  }
  if (region.empty()) return miss<GeluMatch>(why, at + "no elementwise activation");
  // Exactly one value may leave the region; x itself must only feed it.
  std::string exit;
  auto leaves = [&](const std::string& v) {
    if (g.is_graph_output(v)) return true;
    for (int c : g.data_consumers(v))
      if (!region.count(c)) return true;
    return false;
  };
  if (leaves(x)) return miss<GeluMatch>(why, at + "'" + x + "' is also read outside the activation");
  for (int n : region) {
    const std::string& out = g.node(n).output(0);
    if (!leaves(out)) continue;
    if (!exit.empty()) return miss<GeluMatch>(why, at + "the activation has more than one result");
    exit = out;
  }
  if (exit.empty()) return miss<GeluMatch>(why, at + "the activation's result is never used");

  // Evaluate the region (graph order is topological) on sample points.
  std::vector<double> xs;
  for (int i = -120; i <= 120; ++i) xs.push_back(i * 0.05);
  std::map<std::string, std::vector<double>> vals;
  vals[x] = xs;
  for (int n : region) {  // std::set iterates in graph order
    const onnx::NodeProto& node = g.node(n);
    std::vector<std::vector<double>> in;
    for (const std::string& name : node.input()) {
      if (vals.count(name)) {
        in.push_back(vals[name]);
      } else if (auto s = g.scalar(name)) {
        in.push_back(std::vector<double>(xs.size(), *s));
      } else {
        return miss<GeluMatch>(why, at + g.describe(n) + " reads '" + name + "', which is neither the activation input nor a scalar constant");
      }
    }
    const std::string& op = node.op_type();
    const bool binary = op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "Pow";
    if (in.size() != (binary ? 2u : 1u)) return miss<GeluMatch>(why, at + g.describe(n) + ": unexpected input count");
    std::vector<double> r(xs.size());
    for (size_t i = 0; i < xs.size(); ++i) {
      const double a = in[0][i], b = binary ? in[1][i] : 0.0;
      if (op == "Add") r[i] = a + b;
      else if (op == "Sub") r[i] = a - b;
      else if (op == "Mul") r[i] = a * b;
      else if (op == "Div") r[i] = a / b;
      else if (op == "Pow") r[i] = std::pow(a, b);
      else if (op == "Erf") r[i] = std::erf(a);
      else if (op == "Tanh") r[i] = std::tanh(a);
      else if (op == "Sqrt") r[i] = std::sqrt(a);
      else if (op == "Neg") r[i] = -a;
      else if (op == "Sigmoid") r[i] = 1.0 / (1.0 + std::exp(-a));
      else r[i] = std::exp(a);  // Exp
    }
    vals[node.output(0)] = std::move(r);
  }
  const std::vector<double>& y = vals[exit];
  auto max_err = [&](const std::function<double(double)>& f) {
    double e = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const double d = std::fabs(y[i] - f(xs[i]));
      e = std::isfinite(d) ? std::max(e, d) : INFINITY;
    }
    return e;
  };
  // The two GELUs stay 4.7e-4 apart on the sample points; float32 constants
  // move them by ~1e-7, float16 ones (sqrt 2 -> 1.4140625) by up to 3.1e-5.
  const double tol = 1e-4;
  const double k = std::sqrt(2.0 / M_PI);
  GeluMatch m;
  if (max_err([](double v) { return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))); }) < tol) {
    m.act = Activation::GeluErf;
  } else if (max_err([k](double v) { return 0.5 * v * (1.0 + std::tanh(k * (v + 0.044715 * v * v * v))); }) < tol) {
    m.act = Activation::GeluTanh;
  } else {
    std::string ops;
    for (int n : region) ops += (ops.empty() ? "" : ", ") + g.describe(n);
    return miss<GeluMatch>(why, at + "the elementwise ops [" + ops + "] compute neither the erf nor the tanh GELU");
  }
  m.nodes.assign(region.begin(), region.end());
  m.out = exit;
  return m;
}

namespace {
std::optional<ShapeEval> eval_shape_at(const GraphIndex& g, const std::string& value, std::string& why, int depth);
}

std::optional<ShapeEval> eval_shape(const GraphIndex& g, const std::string& value, std::string& why) {
  return eval_shape_at(g, value, why, 0);
}

namespace {
// A shape constant of the file as an integer; false when it is not one
// (NaN, a fraction is truncated as ONNX's int casts do, out of int64 range).
bool shape_int(double v, int64_t* out) {
  if (!(v >= -9.2e18 && v <= 9.2e18)) return false;
  *out = static_cast<int64_t>(v);
  return true;
}

std::optional<ShapeEval> eval_shape_at(const GraphIndex& g, const std::string& value, std::string& why, int depth) {
  // Real shape computations are a handful of nodes deep; this bounds the recursion.
  if (depth > 64) return miss<ShapeEval>(why, "shape computation of '" + value + "' is too deep");
  ShapeEval r;
  if (g.is_const(value)) {
    for (double v : g.consts().value(value).values) {
      int64_t d = 0;
      if (!shape_int(v, &d)) return miss<ShapeEval>(why, "shape constant '" + value + "' holds " + std::to_string(v));
      r.dims.push_back(d);
    }
    return r;
  }
  const int p = g.producer(value);
  if (p < 0) return miss<ShapeEval>(why, "shape value '" + value + "' is not computed inside the graph");
  const onnx::NodeProto& n = g.node(p);
  auto sub = [&](int i) { return eval_shape_at(g, n.input(i), why, depth + 1); };
  auto done = [&](ShapeEval e) {
    e.nodes.push_back(p);
    return std::optional<ShapeEval>(std::move(e));
  };
  const std::string& op = n.op_type();
  if (g.is_op(p, "Shape")) {
    r.known_length = false;
    return done(r);
  }
  if (g.is_op(p, "Unsqueeze") || g.is_op(p, "Squeeze") || g.is_op(p, "Cast") || g.is_op(p, "Identity")) {
    auto e = sub(0);
    return e ? done(*e) : std::nullopt;
  }
  if (g.is_op(p, "Gather")) {
    auto data = sub(0);
    if (!data) return std::nullopt;
    if (!g.is_const(n.input(1)) || g.attr_int(p, "axis", 0) != 0)
      return miss<ShapeEval>(why, g.describe(p) + ": index is not a constant");
    r.nodes = data->nodes;
    for (double v : g.consts().value(n.input(1)).values) {
      int64_t i = 0;
      if (!shape_int(v, &i)) return miss<ShapeEval>(why, g.describe(p) + ": index " + std::to_string(v) + " is not an integer");
      const int64_t len = static_cast<int64_t>(data->dims.size());
      if (data->known_length && i < 0) i += len;
      if (data->known_length && (i < 0 || i >= len))
        return miss<ShapeEval>(why, g.describe(p) + ": index out of range");
      r.dims.push_back(data->known_length ? data->dims[static_cast<size_t>(i)] : std::nullopt);
    }
    return done(r);
  }
  if (g.is_op(p, "Concat")) {
    for (int i = 0; i < n.input_size(); ++i) {
      auto e = sub(i);
      if (!e) return std::nullopt;
      r.nodes.insert(r.nodes.end(), e->nodes.begin(), e->nodes.end());
      r.known_length = r.known_length && e->known_length;
      r.dims.insert(r.dims.end(), e->dims.begin(), e->dims.end());
    }
    return done(r);
  }
  if (g.is_op(p, "Slice")) {
    // Slicing a shape (e.g. shape[:2]): the result length is not tracked.
    for (int i = 0; i < n.input_size(); ++i) {
      if (n.input(i).empty()) continue;
      auto e = sub(i);
      if (!e) return std::nullopt;
      r.nodes.insert(r.nodes.end(), e->nodes.begin(), e->nodes.end());
    }
    r.known_length = false;
    r.dims.clear();
    return done(r);
  }
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
    auto a = sub(0);
    if (!a) return std::nullopt;
    auto b = sub(1);
    if (!b) return std::nullopt;
    if (!a->known_length || !b->known_length || a->dims.size() != 1 || b->dims.size() != 1)
      return miss<ShapeEval>(why, g.describe(p) + ": arithmetic on shape vectors is not supported");
    r.nodes = a->nodes;
    r.nodes.insert(r.nodes.end(), b->nodes.begin(), b->nodes.end());
    std::optional<int64_t> v;
    if (a->dims[0] && b->dims[0]) {
      // Constants of the file: an overflow leaves the value unknown.
      const int64_t x = *a->dims[0], y = *b->dims[0];
      int64_t out = 0;
      bool overflow = false;
      if (op == "Add") overflow = __builtin_add_overflow(x, y, &out);
      else if (op == "Sub") overflow = __builtin_sub_overflow(x, y, &out);
      else if (op == "Mul") overflow = __builtin_mul_overflow(x, y, &out);
      else if (y == 0 || (x == INT64_MIN && y == -1)) overflow = true;
      else out = x / y;
      if (!overflow) v = out;
    }
    r.dims = {v};
    return done(r);
  }
  return miss<ShapeEval>(why, g.describe(p) + " is not part of a recognised shape computation");
}
}  // namespace

std::optional<std::vector<int>> shape_only_nodes(const GraphIndex& g, const std::string& value,
                                                 std::string& why) {
  static const std::set<std::string> kShapeOps = {
      "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Reshape", "ConstantOfShape", "Cast",
      "Identity", "Slice", "Equal", "Where", "Add", "Sub", "Mul", "Div", "Constant"};
  std::vector<int> nodes;
  std::set<int> seen;
  std::vector<std::string> todo = {value};
  while (!todo.empty()) {
    const std::string v = todo.back();
    todo.pop_back();
    if (v.empty() || g.is_const(v)) continue;
    const int p = g.producer(v);
    if (p < 0)
      return miss<std::vector<int>>(why, "shape value '" + value + "' reads '" + v + "', which is not a shape or a constant");
    if (seen.count(p)) continue;
    const onnx::NodeProto& n = g.node(p);
    if (!(n.domain().empty() || n.domain() == "ai.onnx") || !kShapeOps.count(n.op_type()))
      return miss<std::vector<int>>(why, "shape value '" + value + "': " + g.describe(p) + " is not a shape computation");
    seen.insert(p);
    nodes.push_back(p);
    if (g.is_op(p, "Shape")) continue;  // reads only the dimensions of its input
    for (const std::string& in : n.input()) todo.push_back(in);
  }
  return nodes;
}

std::optional<HeadSplit> match_head_split(const GraphIndex& g, const std::string& value,
                                          const std::vector<int64_t>& perm, std::string& why) {
  HeadSplit h;
  int t = g.producer_of_type(value, "Transpose");
  if (t < 0) return miss<HeadSplit>(why, "'" + value + "' is not a Transpose of the attention heads");
  std::vector<int> transposes = {t};
  auto perm_of = [&](int node) { return g.attr_ints(node, "perm").value_or(std::vector<int64_t>{}); };
  if (perm_of(t) != perm) {
    // K^T may be two transposes: heads first, then the last two axes swapped.
    const std::vector<int64_t> heads_first = {0, 2, 1, 3}, swap_last = {0, 1, 3, 2};
    const int t0 = g.producer_of_type(g.node(t).input(0), "Transpose");
    if (perm != std::vector<int64_t>{0, 2, 3, 1} || perm_of(t) != swap_last || t0 < 0 ||
        perm_of(t0) != heads_first || g.sole_consumer(g.node(t0).output(0)) != t)
      return miss<HeadSplit>(why, g.describe(t) + ": unexpected permutation");
    t = t0;
    transposes.push_back(t0);
  }
  const int r = g.producer_of_type(g.node(t).input(0), "Reshape");
  if (r < 0 || g.sole_consumer(g.node(r).output(0)) != t)
    return miss<HeadSplit>(why, g.describe(t) + ": input is not a Reshape into heads used only here");
  auto shape = eval_shape(g, g.node(r).input(1), why);
  if (!shape) return std::nullopt;
  if (shape->known_length) {
    if (shape->dims.size() != 4) return miss<HeadSplit>(why, g.describe(r) + ": target is not [batch, seq, heads, head_dim]");
    if (shape->dims[2] && *shape->dims[2] > 0) h.heads = *shape->dims[2];
    if (shape->dims[3] && *shape->dims[3] > 0) h.head_dim = *shape->dims[3];
  }
  h.x = g.node(r).input(0);
  h.nodes = shape->nodes;
  h.nodes.push_back(r);
  h.nodes.insert(h.nodes.end(), transposes.begin(), transposes.end());
  return h;
}

}  // namespace onnx_import
}  // namespace spinel

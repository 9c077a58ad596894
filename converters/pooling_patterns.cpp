#include "converters/pooling_patterns.h"

#include "converters/onnx_patterns.h"

namespace spinel {
namespace onnx_import {
namespace {

template <typename T>
std::optional<T> miss(std::string& why, const std::string& msg) {
  why = msg;
  return std::nullopt;
}

// The other input of two-input `node`, or "" when neither/both are `known`.
std::string other_input(const GraphIndex& g, int node, const std::string& known) {
  const onnx::NodeProto& n = g.node(node);
  if (n.input_size() != 2) return "";
  if (n.input(0) == known && n.input(1) != known) return n.input(1);
  if (n.input(1) == known && n.input(0) != known) return n.input(0);
  return "";
}

bool axes_are(const std::optional<std::vector<int64_t>>& axes, int64_t a, int64_t rank) {
  return axes && axes->size() == 1 && ((*axes)[0] == a || (*axes)[0] == a - rank);
}

// A small positive scalar floor: Clip(x, eps) or Max(x, eps).
bool is_floor(const GraphIndex& g, int node, const std::string& x) {
  if (g.is_op(node, "Clip")) {
    const onnx::NodeProto& n = g.node(node);
    if (n.input(0) != x) return false;
    if (n.input_size() >= 3 && !n.input(2).empty()) return false;  // no upper bound
    const auto lo = n.input_size() >= 2 && !n.input(1).empty() ? g.scalar(n.input(1)) : std::nullopt;
    const float attr_lo = g.attr_float(node, "min", -1.f);  // opset < 11
    const double eps = lo ? *lo : attr_lo;
    return eps > 0 && eps < 1e-3;
  }
  if (g.is_op(node, "Max")) {
    const std::string c = other_input(g, node, x);
    const auto eps = c.empty() ? std::nullopt : g.scalar(c);
    return eps && *eps > 0 && *eps < 1e-3;
  }
  return false;
}

}  // namespace

std::optional<MeanPoolMatch> match_mean_pooling(const GraphIndex& g, const std::string& hidden,
                                                std::string& why) {
  const std::string at = "pooling of '" + hidden + "': ";
  MeanPoolMatch m;
  // h * m, the only data reader of h besides Shape nodes.
  int mul = -1;
  for (int c : g.data_consumers(hidden))
    if (g.is_op(c, "Mul")) mul = mul < 0 ? c : -2;
  if (mul < 0) return miss<MeanPoolMatch>(why, at + "no single Mul(hidden, mask)");
  const std::string mask = other_input(g, mul, hidden);
  if (mask.empty()) return miss<MeanPoolMatch>(why, at + g.describe(mul) + " does not multiply by a mask");
  std::vector<int> nodes = {mul};

  // The mask: Cast(Expand(Unsqueeze(attention_mask, -1), shape)).
  std::string v = mask;
  while (!g.is_graph_input(v)) {
    const int p = g.producer(v);
    if (p < 0 || !(g.is_op(p, "Cast") || g.is_op(p, "Expand") || g.is_op(p, "Unsqueeze") ||
                   g.is_op(p, "Identity")))
      return miss<MeanPoolMatch>(why, at + "the mask '" + mask + "' is not the attention mask input expanded to the hidden states");
    const onnx::NodeProto& n = g.node(p);
    for (int i = 1; i < n.input_size(); ++i) {
      auto s = shape_only_nodes(g, n.input(i), why);
      if (!s) return std::nullopt;
      nodes.insert(nodes.end(), s->begin(), s->end());
    }
    nodes.push_back(p);
    v = n.input(0);
  }
  m.mask_input = v;

  // sum(h * m, 1) / clip(sum(m, 1), eps)
  const int sum_h = g.sole_consumer(g.node(mul).output(0));
  if (!g.is_op(sum_h, "ReduceSum") || !axes_are(g.axes_of(sum_h), 1, 3) || g.attr_int(sum_h, "keepdims", 1) != 0)
    return miss<MeanPoolMatch>(why, at + "h * mask is not summed over the sequence (ReduceSum axis 1, keepdims 0)");
  int sum_m = -1;
  for (int c : g.data_consumers(mask))
    if (c != mul) sum_m = sum_m < 0 ? c : -2;
  if (!g.is_op(sum_m, "ReduceSum") || !axes_are(g.axes_of(sum_m), 1, 3) || g.attr_int(sum_m, "keepdims", 1) != 0)
    return miss<MeanPoolMatch>(why, at + "the mask is not counted over the sequence (ReduceSum axis 1, keepdims 0)");
  const int floor = g.sole_consumer(g.node(sum_m).output(0));
  if (!is_floor(g, floor, g.node(sum_m).output(0)))
    return miss<MeanPoolMatch>(why, at + "the token count is not clamped to a small positive minimum");
  const int div = g.sole_consumer(g.node(floor).output(0));
  if (!g.is_op(div, "Div") || g.node(div).input(0) != g.node(sum_h).output(0) ||
      g.node(div).input(1) != g.node(floor).output(0) || g.sole_consumer(g.node(sum_h).output(0)) != div)
    return miss<MeanPoolMatch>(why, at + "the sum is not divided by the token count");
  nodes.insert(nodes.end(), {sum_h, sum_m, floor, div});
  for (int i = 1; i < g.node(sum_h).input_size(); ++i) nodes.push_back(g.producer(g.node(sum_h).input(i)));
  for (int i = 1; i < g.node(sum_m).input_size(); ++i) nodes.push_back(g.producer(g.node(sum_m).input(i)));
  m.out = g.node(div).output(0);

  // Optional L2 normalization: x / expand(clip(ReduceL2(x, 1, keepdims), eps)).
  if (!g.is_graph_output(m.out)) {
    const std::string x = m.out;
    std::vector<int> readers = g.data_consumers(x);
    int l2 = -1, ndiv = -1, lp = -1;
    for (int r : readers) {
      if (g.is_op(r, "ReduceL2")) l2 = r;
      else if (g.is_op(r, "Div")) ndiv = r;
      else if (g.is_op(r, "LpNormalization")) lp = r;
    }
    if (lp >= 0 && readers.size() == 1) {
      const int64_t axis = g.attr_int(lp, "axis", -1);
      if (g.attr_int(lp, "p", 2) != 2 || (axis != 1 && axis != -1))
        return miss<MeanPoolMatch>(why, at + g.describe(lp) + " is not an L2 normalization over the hidden axis");
      nodes.push_back(lp);
      m.out = g.node(lp).output(0);
    } else {
      if (l2 < 0 || ndiv < 0 || readers.size() != 2 || g.node(ndiv).input(0) != x)
        return miss<MeanPoolMatch>(why, at + "the mean '" + x + "' is neither a graph output nor L2-normalized");
      if (!axes_are(g.axes_of(l2), 1, 2) || g.attr_int(l2, "keepdims", 1) != 1)
        return miss<MeanPoolMatch>(why, at + g.describe(l2) + " is not a norm over the hidden axis");
      const int clip = g.sole_consumer(g.node(l2).output(0));
      if (!is_floor(g, clip, g.node(l2).output(0)))
        return miss<MeanPoolMatch>(why, at + "the norm is not clamped to a small positive minimum");
      nodes.insert(nodes.end(), {l2, clip, ndiv});
      std::string denom = g.node(clip).output(0);
      if (g.node(ndiv).input(1) != denom) {
        const int ex = g.sole_consumer(denom);
        if (!g.is_op(ex, "Expand") || g.node(ex).output(0) != g.node(ndiv).input(1))
          return miss<MeanPoolMatch>(why, at + g.describe(ndiv) + " does not divide by the clamped norm");
        auto s = shape_only_nodes(g, g.node(ex).input(1), why);
        if (!s) return std::nullopt;
        nodes.insert(nodes.end(), s->begin(), s->end());
        nodes.push_back(ex);
      }
      for (int i = 1; i < g.node(l2).input_size(); ++i) nodes.push_back(g.producer(g.node(l2).input(i)));
      m.out = g.node(ndiv).output(0);
    }
    m.normalized = true;
  }
  if (!g.is_graph_output(m.out)) return miss<MeanPoolMatch>(why, at + "the pooled value '" + m.out + "' is not a graph output");
  if (!g.consumers(m.out).empty()) return miss<MeanPoolMatch>(why, at + "the pooled value '" + m.out + "' is read by further nodes");
  for (int n : nodes)
    if (n >= 0) m.nodes.push_back(n);
  return m;
}

}  // namespace onnx_import
}  // namespace spinel

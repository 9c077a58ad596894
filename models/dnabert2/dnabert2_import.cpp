#include "models/dnabert2/dnabert2_import.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "converters/config_json.h"
#include "converters/encoder_patterns.h"
#include "converters/onnx_eval.h"
#include "runtime/error.h"

namespace spinel {
namespace onnx_import {
namespace {

template <typename T>
std::optional<T> miss(std::string& why, const std::string& msg) {
  why = msg;
  return std::nullopt;
}

std::string num(double v) {
  std::ostringstream s;
  s.precision(7);
  s << v;
  return s.str();
}

// Lengths the length-dependent parts are checked at: one token, two, an odd
// length, a long one and one past DNABERT-2's training length.
const int64_t kBiasLengths[] = {1, 2, 7, 64, 513};
const int64_t kShuffleLengths[] = {1, 7, 64};
constexpr int64_t kBatch = 2;

struct Inputs {
  std::string mask;                  // the attention-mask input ("" if none)
  std::vector<std::string> indices;  // inputs read as lookup indices (ids, token types)
};

// Keys a padded row keeps: row 0 keeps all, row 1 drops every third key
// (never key 0, so each query sees at least one key).
bool keeps(int64_t b, int64_t j) { return b == 0 || j % 3 != 2; }

void bind_inputs(SubgraphEval& ev, const GraphIndex& g, const Inputs& in, int64_t B, int64_t L) {
  for (const auto& gi : g.graph().input()) {
    if (g.is_const(gi.name())) continue;
    EvalTensor t;
    t.dims = {B, L};
    t.is_int = true;
    t.v.assign(static_cast<size_t>(B * L), 0.0);
    if (gi.name() == in.mask)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < L; ++j) t.v[static_cast<size_t>(b * L + j)] = keeps(b, j) ? 1.0 : 0.0;
    ev.bind(gi.name(), std::move(t));
  }
}

// Element (b, h, i, j) of t broadcast to [B, heads, L, L].
double at4(const EvalTensor& t, int64_t b, int64_t h, int64_t i, int64_t j) {
  const int64_t idx[4] = {b, h, i, j};
  int64_t off = 0, stride = 1;
  const size_t r = t.dims.size();
  for (size_t k = 0; k < r; ++k) {
    const size_t d = r - 1 - k;
    const int64_t dim = t.dims[d];
    const int64_t x = dim == 1 ? 0 : idx[3 - k];
    off += x * stride;
    stride *= dim;
  }
  return t.v[static_cast<size_t>(off)];
}

EvalTensor codes(std::vector<int64_t> dims) {
  EvalTensor t;
  t.dims = std::move(dims);
  t.v.resize(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < t.v.size(); ++i) t.v[i] = static_cast<double>(i);
  return t;
}

// x * c or x / c with a scalar constant c: returns x and multiplies `scale`.
std::string strip_scale(const GraphIndex& g, const std::string& v, double& scale, std::vector<int>& nodes) {
  std::string cur = v;
  for (;;) {
    const int p = g.producer(cur);
    if (!(g.is_op(p, "Mul") || g.is_op(p, "Div"))) return cur;
    const onnx::NodeProto& n = g.node(p);
    int ci = g.scalar(n.input(1)) ? 1 : (g.is_op(p, "Mul") && g.scalar(n.input(0))) ? 0 : -1;
    if (ci < 0) return cur;
    const double c = *g.scalar(n.input(ci));
    if (c == 0 || !std::isfinite(c)) return cur;
    scale *= g.is_op(p, "Div") ? 1.0 / c : c;
    nodes.push_back(p);
    cur = n.input(1 - ci);
  }
}

bool is_score_value(const GraphIndex& g, const std::string& v) {
  double s = 1;
  std::vector<int> tmp;
  const std::string x = strip_scale(g, v, s, tmp);
  const int p = g.producer(x);
  return g.is_op(p, "MatMul") && !g.is_const(g.node(p).input(0)) && !g.is_const(g.node(p).input(1));
}

bool is_shuffle(const GraphIndex& g, int n) {
  static const std::set<std::string> k = {"Reshape", "Transpose", "Gather", "Slice", "Squeeze",
                                          "Unsqueeze", "Split", "Identity"};
  return n >= 0 && k.count(g.node(n).op_type()) != 0;
}

struct LayerM {
  LinearMatch qkv, attn_out, gated, wo;
  LayerNormMatch ln1, ln2;
  int softmax = -1;
  int64_t heads = 0;
  double scale = 1;
  bool gate_swapped = false;  // GELU on the second half: the halves are swapped when lowered
};

struct Head {
  std::string weight, bias;
  bool transposed = false;
  int64_t in = 0, out = 0;
  int node = -1;
};

class Dnabert2Match final : public FamilyMatch {
 public:
  std::optional<EmbeddingMatch> emb;
  std::vector<LayerM> layers;
  std::optional<Head> pooler, classifier;
  bool pooler_is_output = false;

  void build(const GraphIndex& g, IrBuilder& ir, ImportReport& rep) const override;
};

// A dense layer reading `x` as its consumer `c`: Gemm, or MatMul (+ Add).
std::optional<Head> dense_at(const GraphIndex& g, int c, const std::string& x, std::vector<int>& nodes,
                             std::string& out, std::string& why) {
  Head h;
  h.node = c;
  if (g.is_op(c, "Gemm")) {
    const onnx::NodeProto& n = g.node(c);
    if (n.input(0) != x || !g.is_const(n.input(1)) || g.consts().dims(n.input(1)).size() != 2)
      return miss<Head>(why, g.describe(c) + " does not multiply by a constant 2-D weight");
    if (g.attr_float(c, "alpha", 1.f) != 1.f || g.attr_float(c, "beta", 1.f) != 1.f || g.attr_int(c, "transA", 0))
      return miss<Head>(why, g.describe(c) + ": alpha, beta or transA differ from a Linear");
    h.transposed = g.attr_int(c, "transB", 0) != 0;
    const auto d = g.consts().dims(n.input(1));
    h.weight = n.input(1);
    h.in = h.transposed ? d[1] : d[0];
    h.out = h.transposed ? d[0] : d[1];
    if (n.input_size() > 2 && !n.input(2).empty()) {
      if (!g.is_const(n.input(2)) || g.consts().dims(n.input(2)) != std::vector<int64_t>{h.out})
        return miss<Head>(why, g.describe(c) + ": bias is not a constant vector");
      h.bias = n.input(2);
    }
    nodes.push_back(c);
    out = n.output(0);
    return h;
  }
  if (g.is_op(c, "MatMul")) {
    auto l = match_linear(g, c, why);
    if (!l || l->x != x) return miss<Head>(why, g.describe(c) + " is not a Linear of '" + x + "'");
    h.weight = l->weight;
    h.bias = l->bias;
    h.in = l->in_features;
    h.out = l->out_features;
    nodes.insert(nodes.end(), l->nodes.begin(), l->nodes.end());
    out = l->out;
    return h;
  }
  return miss<Head>(why, g.describe(c) + " is not a dense layer (Gemm or MatMul)");
}

// The Linear whose MatMul reads `x` with a constant weight of `cols` columns.
std::optional<LinearMatch> linear_reading(const GraphIndex& g, const std::string& x, int64_t rows, int64_t cols,
                                          std::string& why) {
  for (int c : g.data_consumers(x)) {
    if (!g.is_op(c, "MatMul") || g.node(c).input(0) != x) continue;
    std::string w;
    auto l = match_linear(g, c, w);
    if (l && l->in_features == rows && (cols < 0 || l->out_features == cols)) return l;
  }
  return miss<LinearMatch>(why, "'" + x + "' feeds no Linear with a [" + std::to_string(rows) + ", " +
                                    (cols < 0 ? std::string("N") : std::to_string(cols)) + "] weight");
}

int residual_add(const GraphIndex& g, const std::string& y, const std::string& residual) {
  const int add = g.sole_consumer(y);
  if (!g.is_op(add, "Add")) return -1;
  const onnx::NodeProto& n = g.node(add);
  const bool ok = (n.input(0) == y && n.input(1) == residual) || (n.input(1) == y && n.input(0) == residual);
  return ok ? add : -1;
}

// The ALiBi bias check, cached per bias value (layers usually share one).
struct BiasCache {
  std::map<std::string, std::string> problem;  // "" when good
  std::map<std::string, std::set<int>> nodes;
};

// Checks that evaluating `bias_of` (with `zero` bound to zeros when not
// empty) gives ALiBi + mask at every length. Fills `nodes` with what it
// explains. Returns a problem, or "".
std::string check_alibi(const GraphIndex& g, const Inputs& in, const std::string& bias_of,
                        const std::string& zero, int64_t heads, std::set<int>& nodes) {
  const std::vector<float> rule = alibi_slopes(static_cast<int>(heads));
  const std::string at = "attention bias '" + bias_of + "': ";
  for (int64_t L : kBiasLengths) {
    SubgraphEval ev(g);
    bind_inputs(ev, g, in, kBatch, L);
    std::string why;
    if (!zero.empty()) {
      auto s = ev.eval(zero, why);
      if (!s) return at + why;
      EvalTensor z = EvalTensor::shape_only(s->dims);
      z.has_data = true;
      z.v.assign(static_cast<size_t>(z.numel()), 0.0);
      ev.bind(zero, std::move(z));
    }
    auto t = ev.eval(bias_of, why);
    if (!t)
      return at + "cannot be evaluated at length " + std::to_string(L) + " (ALiBi must follow any length; a " +
             "bias of fixed size such as a sliced constant buffer does not): " + why;
    if (!t->has_data) return at + "depends on the data of the hidden states, not only on the length and the mask";
    if (t->dims.size() > 4) return at + "has rank " + std::to_string(t->dims.size());
    const int64_t want[4] = {kBatch, heads, L, L};
    for (size_t k = 0; k < t->dims.size(); ++k) {
      const int64_t d = t->dims[t->dims.size() - 1 - k], w = want[3 - k];
      if (d != 1 && d != w)
        return at + "at length " + std::to_string(L) + " has shape dimension " + std::to_string(d) + " where " +
               std::to_string(w) + " (or 1) is expected";
    }
    std::vector<double> slope(static_cast<size_t>(heads), 0.0);
    for (int64_t h = 0; h < heads; ++h) {
      if (L >= 2) slope[static_cast<size_t>(h)] = -at4(*t, 0, h, 0, 1);
      if (L == 2 && std::fabs(slope[static_cast<size_t>(h)] - rule[static_cast<size_t>(h)]) >
                        1e-6 * rule[static_cast<size_t>(h)]) {
        if (slope[static_cast<size_t>(h)] == 0)
          return at + "has no ALiBi term (head " + std::to_string(h) + " adds 0 at distance 1)";
        return at + "head " + std::to_string(h) + " has ALiBi slope " + num(slope[static_cast<size_t>(h)]) +
               ", the rule for " + std::to_string(heads) + " heads gives " + num(rule[static_cast<size_t>(h)]);
      }
    }
    for (int64_t b = 0; b < kBatch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < L; ++i)
          for (int64_t j = 0; j < L; ++j) {
            const double v = at4(*t, b, h, i, j);
            if (!keeps(b, j)) {
              if (!(v <= -1000.0))
                return at + "a padded key (batch " + std::to_string(b) + ", key " + std::to_string(j) +
                       ") gets " + num(v) + ", not a large negative number: the mask is not applied";
              continue;
            }
            const double e = -static_cast<double>(rule[static_cast<size_t>(h)]) * static_cast<double>(std::llabs(j - i));
            if (std::fabs(v - e) > 1e-5 * (1.0 + std::fabs(e)))
              return at + "at length " + std::to_string(L) + ", head " + std::to_string(h) + ", query " +
                     std::to_string(i) + ", key " + std::to_string(j) + " is " + num(v) +
                     ", ALiBi gives -slope * |j - i| = " + num(e) + (std::llabs(j - i) > 0 && std::fabs(v + e) < 1e-5 * (1 + std::fabs(e)) ? " (the bias is not symmetric)" : "");
          }
    if (L == kBiasLengths[0]) {
      std::set<std::string> read;
      nodes = ev.data_nodes(bias_of, &read);
      for (const std::string& r : read)
        if (r != in.mask) return at + "reads the data of graph input '" + r + "'";
      if (!in.mask.empty() && !read.count(in.mask)) return at + "does not read the attention mask '" + in.mask + "'";
    }
  }
  return "";
}

std::optional<LayerM> match_layer(GraphIndex& g, int softmax, const Inputs& in, BiasCache& cache, std::string& why) {
  LayerM l;
  l.softmax = softmax;
  const std::string at = "attention at " + g.describe(softmax) + ": ";
  const int64_t axis = g.attr_int(softmax, "axis", -1);
  if (axis != -1 && axis != 3) return miss<LayerM>(why, at + "softmax is not over the last axis");
  std::vector<int> nodes = {softmax};
  const std::string sm_in = g.node(softmax).input(0);
  // Scores + bias terms: walk the Adds down to the scaled Q.K^T.
  std::string s = sm_in;
  std::vector<int> adds;
  while (!is_score_value(g, s)) {
    const int a = g.producer_of_type(s, "Add");
    if (a < 0) return miss<LayerM>(why, at + "no Q.K^T MatMul (+ bias) before the softmax");
    const onnx::NodeProto& n = g.node(a);
    const bool s0 = is_score_value(g, n.input(0)) || g.is_op(g.producer(n.input(0)), "Add");
    const bool s1 = is_score_value(g, n.input(1)) || g.is_op(g.producer(n.input(1)), "Add");
    if (is_score_value(g, n.input(0))) s = n.input(0);
    else if (is_score_value(g, n.input(1))) s = n.input(1);
    else if (s0 && !s1) s = n.input(0);
    else if (s1 && !s0) s = n.input(1);
    else return miss<LayerM>(why, at + g.describe(a) + ": cannot tell the scores from the bias");
    adds.push_back(a);
  }
  if (adds.empty()) return miss<LayerM>(why, at + "no bias is added to the scores: not an ALiBi attention");
  if (g.sole_consumer(s) != adds.back()) return miss<LayerM>(why, at + "the scores are read elsewhere too");
  double scale = 1;
  const std::string raw = strip_scale(g, s, scale, nodes);
  const int mm = g.producer(raw);
  nodes.push_back(mm);
  std::string q = strip_scale(g, g.node(mm).input(0), scale, nodes);
  std::string k = strip_scale(g, g.node(mm).input(1), scale, nodes);
  l.scale = scale;
  // probs . V, then the heads merged and the output dense.
  const int pv = g.sole_consumer(g.node(softmax).output(0));
  if (!g.is_op(pv, "MatMul") || g.node(pv).input(0) != g.node(softmax).output(0))
    return miss<LayerM>(why, at + "softmax output is not multiplied by V");
  nodes.push_back(pv);
  const std::string v = g.node(pv).input(1);
  std::string c = g.node(pv).output(0);
  int dense = -1;
  for (int guard = 0; guard < 16; ++guard) {
    const int n = g.sole_consumer(c);
    if (g.is_op(n, "MatMul") && g.node(n).input(0) == c && g.is_const(g.node(n).input(1))) {
      dense = n;
      break;
    }
    if (!is_shuffle(g, n) || g.node(n).input(0) != c) break;
    c = g.node(n).output(0);
  }
  if (dense < 0) return miss<LayerM>(why, at + "the context does not reach a dense layer through reshapes");
  auto ao = match_linear(g, dense, why);
  if (!ao) return std::nullopt;
  l.attn_out = *ao;
  const int64_t H = ao->out_features;
  // Wqkv: up from Q through the head split.
  std::string u = q;
  std::optional<LinearMatch> qkv;
  for (int guard = 0; guard < 16 && !qkv; ++guard) {
    std::string lw;
    auto m = match_linear_producing(g, u, lw);
    if (m && m->in_features == H && m->out_features == 3 * H) {
      qkv = m;
      break;
    }
    const int p = g.producer(u);
    if (!is_shuffle(g, p)) break;
    u = g.node(p).input(0);
  }
  if (!qkv) return miss<LayerM>(why, at + "Q does not come from a fused Wqkv Linear [" + std::to_string(H) + ", " + std::to_string(3 * H) + "]");
  l.qkv = *qkv;
  // Head split and merge, checked by evaluating them on index codes.
  for (int64_t L : kShuffleLengths) {
    SubgraphEval ev(g);
    bind_inputs(ev, g, in, kBatch, L);
    ev.bind(qkv->out, codes({kBatch, L, 3 * H}));
    std::string ew;
    auto tq = ev.eval(q, ew), tk = tq ? ev.eval(k, ew) : std::nullopt, tv = tk ? ev.eval(v, ew) : std::nullopt;
    if (!tv) return miss<LayerM>(why, at + "head split: " + ew);
    if (tq->dims.size() != 4 || tq->dims[0] != kBatch || tq->dims[2] != L || tq->dims[1] * tq->dims[3] != H)
      return miss<LayerM>(why, at + "Q is not split into [batch, heads, seq, head_dim]");
    const int64_t nh = tq->dims[1], hd = tq->dims[3];
    if (l.heads && l.heads != nh) return miss<LayerM>(why, at + "head count differs between lengths");
    l.heads = nh;
    const std::vector<int64_t> want_q = {kBatch, nh, L, hd}, want_k = {kBatch, nh, hd, L};
    if (!tq->has_data || !tk->has_data || !tv->has_data || tk->dims != want_k || tv->dims != want_q)
      return miss<LayerM>(why, at + "K is not [batch, heads, head_dim, seq] or V not [batch, heads, seq, head_dim]");
    for (int64_t b = 0; b < kBatch; ++b)
      for (int64_t h = 0; h < nh; ++h)
        for (int64_t t = 0; t < L; ++t)
          for (int64_t d = 0; d < hd; ++d) {
            const double base = static_cast<double>((b * L + t) * 3 * H + h * hd + d);
            const size_t iq = static_cast<size_t>(((b * nh + h) * L + t) * hd + d);
            const size_t ik = static_cast<size_t>(((b * nh + h) * hd + d) * L + t);
            if (tq->v[iq] != base || tk->v[ik] != base + H || tv->v[iq] != base + 2 * H)
              return miss<LayerM>(why, at + "Q, K and V are not the columns Q | K | V (head-major) of " + g.describe(qkv->matmul));
          }
    for (const std::string& x : {q, k, v}) {
      std::set<std::string> read;
      const std::set<int> dn = ev.data_nodes(x, &read);
      if (!read.empty()) return miss<LayerM>(why, at + "the head split reads graph input '" + *read.begin() + "'");
      nodes.insert(nodes.end(), dn.begin(), dn.end());
    }
    SubgraphEval ev2(g);
    bind_inputs(ev2, g, in, kBatch, L);
    ev2.bind(g.node(pv).output(0), codes({kBatch, nh, L, hd}));
    auto tc = ev2.eval(ao->x, ew);
    if (!tc) return miss<LayerM>(why, at + "head merge: " + ew);
    if (!tc->has_data || tc->dims != std::vector<int64_t>{kBatch, L, H})
      return miss<LayerM>(why, at + "the heads are not merged into [batch, seq, hidden]");
    for (int64_t b = 0; b < kBatch; ++b)
      for (int64_t h = 0; h < nh; ++h)
        for (int64_t t = 0; t < L; ++t)
          for (int64_t d = 0; d < hd; ++d)
            if (tc->v[static_cast<size_t>((b * L + t) * H + h * hd + d)] != static_cast<double>(((b * nh + h) * L + t) * hd + d))
              return miss<LayerM>(why, at + "the heads are not merged back in order");
    const std::set<int> dn = ev2.data_nodes(ao->x);
    nodes.insert(nodes.end(), dn.begin(), dn.end());
  }
  // The bias: softmax input with the scores at zero.
  std::string bias_value, zero;
  if (adds.size() == 1) {
    const onnx::NodeProto& a = g.node(adds[0]);
    bias_value = a.input(0) == s ? a.input(1) : a.input(0);
    nodes.push_back(adds[0]);
  } else {
    bias_value = sm_in;
    zero = s;
  }
  if (!cache.problem.count(bias_value)) {
    std::set<int> bn;
    cache.problem[bias_value] = check_alibi(g, in, bias_value, zero, l.heads, bn);
    cache.nodes[bias_value] = bn;
  }
  // A bias that is not ALiBi is reported after the rest of the layer is
  // matched and covered: the rejection then names it rather than a family
  // that explains less of the graph.
  const std::string bias_problem = cache.problem[bias_value];
  nodes.insert(nodes.end(), cache.nodes[bias_value].begin(), cache.nodes[bias_value].end());

  // Residual, LayerNorm, GEGLU MLP, residual, LayerNorm.
  const int r1 = residual_add(g, ao->out, qkv->x);
  if (r1 < 0) return miss<LayerM>(why, at + "attention output is not added to the layer input");
  auto ln1 = match_layernorm(g, g.node(r1).output(0), why);
  if (!ln1) return std::nullopt;
  l.ln1 = *ln1;
  auto gl = linear_reading(g, ln1->out, H, -1, why);
  if (!gl) return std::nullopt;
  if (gl->out_features % 2 != 0) return miss<LayerM>(why, g.describe(gl->matmul) + ": gated_layers width " + std::to_string(gl->out_features) + " is odd");
  const int64_t I = gl->out_features / 2;
  l.gated = *gl;
  std::optional<LinearMatch> wo;
  int r2 = -1;
  for (int c2 : g.data_consumers(ln1->out)) {
    if (!g.is_op(c2, "Add")) continue;
    const onnx::NodeProto& a = g.node(c2);
    const std::string other = a.input(0) == ln1->out ? a.input(1) : a.input(0);
    std::string lw;
    auto m = match_linear_producing(g, other, lw);
    if (m && m->in_features == I && m->out_features == H) {
      wo = m;
      r2 = c2;
    }
  }
  if (!wo) return miss<LayerM>(why, g.describe(gl->matmul) + ": no wo Linear [" + std::to_string(I) + ", " + std::to_string(H) + "] added back to '" + ln1->out + "'");
  l.wo = *wo;
  {
    SubgraphEval ev(g);
    bind_inputs(ev, g, in, 1, 5);
    EvalTensor x;
    x.dims = {1, 5, 2 * I};
    std::mt19937 rng(7);
    std::uniform_real_distribution<double> U(-4, 4);
    for (int64_t i = 0; i < x.numel(); ++i) x.v.push_back(U(rng));
    const EvalTensor xin = x;
    ev.bind(gl->out, std::move(x));
    std::string ew;
    auto t = ev.eval(wo->x, ew);
    if (!t) return miss<LayerM>(why, g.describe(gl->matmul) + ": gate: " + ew);
    if (!t->has_data || t->dims != std::vector<int64_t>{1, 5, I})
      return miss<LayerM>(why, g.describe(gl->matmul) + ": the gate does not give [batch, seq, " + std::to_string(I) + "]");
    auto gelu = [](double z) { return 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0))); };
    bool first = true, second = true;
    for (int64_t r = 0; r < 5; ++r)
      for (int64_t j = 0; j < I; ++j) {
        const double a = xin.v[static_cast<size_t>(r * 2 * I + j)], b = xin.v[static_cast<size_t>(r * 2 * I + I + j)];
        const double got = t->v[static_cast<size_t>(r * I + j)];
        first = first && std::fabs(got - gelu(a) * b) <= 1e-6 * (1 + std::fabs(got));
        second = second && std::fabs(got - gelu(b) * a) <= 1e-6 * (1 + std::fabs(got));
      }
    if (!first && !second)
      return miss<LayerM>(why, g.describe(gl->matmul) + ": the MLP between gated_layers and wo is not exact GELU(one half) * the other half (GEGLU)");
    l.gate_swapped = !first;
    std::set<std::string> read;
    const std::set<int> dn = ev.data_nodes(wo->x, &read);
    if (!read.empty()) return miss<LayerM>(why, g.describe(gl->matmul) + ": the gate reads graph input '" + *read.begin() + "'");
    nodes.insert(nodes.end(), dn.begin(), dn.end());
  }
  auto ln2 = match_layernorm(g, g.node(r2).output(0), why);
  if (!ln2) return std::nullopt;
  l.ln2 = *ln2;
  for (const LinearMatch* m : {&l.qkv, &l.attn_out, &l.gated, &l.wo}) nodes.insert(nodes.end(), m->nodes.begin(), m->nodes.end());
  nodes.insert(nodes.end(), adds.begin(), adds.end());
  nodes.push_back(r1);
  nodes.push_back(r2);
  nodes.insert(nodes.end(), ln1->nodes.begin(), ln1->nodes.end());
  nodes.insert(nodes.end(), ln2->nodes.begin(), ln2->nodes.end());
  g.cover(nodes);
  if (!bias_problem.empty()) return miss<LayerM>(why, bias_problem);
  return l;
}

void Dnabert2Match::build(const GraphIndex& g, IrBuilder& ir, ImportReport& rep) const {
  const int32_t e = lower_embeddings(g, *emb, ir);
  ModelConfig& cfg = ir.config();
  const int64_t H = cfg.hidden_size;
  cfg.num_layers = static_cast<int64_t>(layers.size());
  cfg.num_heads = layers.at(0).heads;
  cfg.intermediate_size = layers[0].gated.out_features / 2;
  cfg.hidden_act = Activation::GeluErf;
  // No position table: the limit is the checkpoint's (config.json beside the
  // model), else the documented default.
  cfg.max_position = kAlibiDefaultMaxPosition;
  std::string limit_from = "default";
  if (auto n = config_json_int(g.consts().model_dir(), {"max_position_embeddings", "alibi_starting_size"}, 1,
                               int64_t{1} << 20)) {
    cfg.max_position = n->value;
    limit_from = n->source;
  }
  int32_t cur = e;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerM& l = layers[i];
    const std::string p = "layer." + std::to_string(i) + ".";
    const int64_t I = l.gated.out_features / 2;
    if (l.heads != cfg.num_heads || I != cfg.intermediate_size || l.qkv.in_features != H)
      fail("layer ", i, " (", g.describe(l.softmax), ") differs from layer 0 in heads, widths or intermediate size");
    auto linear = [&](const LinearMatch& m, const std::string& name, int32_t x, int32_t residual, int64_t out_w,
                      Gate gate, bool swap) {
      Op o;
      o.kind = OpKind::Linear;
      o.name = g.node(m.matmul).name();
      o.in0 = x;
      o.in1 = residual;
      o.gate = gate;
      o.out = ir.value(name, out_w);
      std::vector<float> w = ir.floats(m.weight, m.in_features * m.out_features);
      std::vector<float> b = m.bias.empty() ? std::vector<float>{} : ir.floats(m.bias, m.out_features);
      if (swap) {  // GELU reads the second half: put it first
        const int64_t N = m.out_features, h = N / 2;
        for (int64_t r = 0; r < m.in_features; ++r)
          std::rotate(w.begin() + r * N, w.begin() + r * N + h, w.begin() + (r + 1) * N);
        if (!b.empty()) std::rotate(b.begin(), b.begin() + h, b.end());
      }
      o.w[slot::kWeight] = ir.tensor(name + ".weight", {m.in_features, m.out_features}, w);
      if (!b.empty()) o.w[slot::kBias] = ir.tensor(name + ".bias", {m.out_features}, b);
      return ir.add(std::move(o));
    };
    auto layernorm = [&](const LayerNormMatch& m, const std::string& name, int32_t x) {
      Op o;
      o.kind = OpKind::LayerNorm;
      o.name = g.node(m.nodes.back()).name();
      o.in0 = x;
      o.eps = m.eps;
      o.out = ir.value(name, H);
      o.w[slot::kGamma] = ir.weight(name + ".gamma", m.gamma, {H});
      o.w[slot::kBeta] = ir.weight(name + ".beta", m.beta, {H});
      return ir.add(std::move(o));
    };
    const int32_t qkv = linear(l.qkv, p + "attention.Wqkv", cur, -1, 3 * H, Gate::None, false);
    Op att;
    att.kind = OpKind::Attention;
    att.name = g.node(l.softmax).name();
    att.in0 = qkv;
    att.out = ir.value(p + "context", H);
    att.num_heads = static_cast<int32_t>(l.heads);
    att.scale = static_cast<float>(l.scale);
    att.alibi = true;
    const int32_t ctx = ir.add(std::move(att));
    const int32_t ao = linear(l.attn_out, p + "attention.output", ctx, cur, H, Gate::None, false);
    const int32_t a = layernorm(l.ln1, p + "attention.ln", ao);
    const int32_t gl = linear(l.gated, p + "mlp.gated_layers", a, -1, I, Gate::Geglu, l.gate_swapped);
    const int32_t o = linear(l.wo, p + "mlp.wo", gl, a, H, Gate::None, false);
    cur = layernorm(l.ln2, p + "mlp.ln", o);
  }
  ir.graph().output = cur;
  std::string heads;
  auto head_linear = [&](const Head& h, const std::string& name, int32_t x, Activation act) {
    Op o;
    o.kind = OpKind::Linear;
    o.name = g.node(h.node).name();
    o.in0 = x;
    o.act = act;
    o.out = ir.value(name, h.out, Rows::Sequences);
    std::vector<float> w = ir.floats(h.weight, h.in * h.out);
    if (h.transposed) {
      std::vector<float> t(w.size());
      for (int64_t r = 0; r < h.out; ++r)
        for (int64_t c = 0; c < h.in; ++c) t[static_cast<size_t>(c * h.out + r)] = w[static_cast<size_t>(r * h.in + c)];
      w.swap(t);
    }
    o.w[slot::kWeight] = ir.tensor(name + ".weight", {h.in, h.out}, w);
    if (!h.bias.empty()) o.w[slot::kBias] = ir.weight(name + ".bias", h.bias, {h.out});
    return ir.add(std::move(o));
  };
  if (pooler || classifier) {
    Op pool;
    pool.kind = OpKind::Pool;
    pool.pool = PoolKind::Cls;
    pool.name = "cls";
    pool.in0 = cur;
    pool.out = ir.value("cls", H, Rows::Sequences);
    int32_t x = ir.add(std::move(pool));
    if (pooler) {
      x = head_linear(*pooler, "pooler_output", x, Activation::Tanh);
      if (pooler_is_output) ir.graph().outputs.push_back(GraphOutput{"pooler_output", x});
      heads = "pooler_output";
    }
    if (classifier) {
      const int32_t lg = head_linear(*classifier, "logits", x, Activation::None);
      ir.graph().outputs.push_back(GraphOutput{"logits", lg});
      heads += std::string(heads.empty() ? "" : ", ") + "logits (" + std::to_string(classifier->out) + " classes)";
    }
    cfg.default_pool = classifier ? "logits" : "pooler_output";
  } else {
    cfg.default_pool = "mean";
  }
  rep.heads = heads;
  rep.layer_norm_form = emb->ln.fused ? "LayerNormalization" : "decomposed";
  rep.gelu_form = "erf (GEGLU)";
  rep.mask_form = "ALiBi + additive mask; max_position " + std::to_string(cfg.max_position) + " (" + limit_from + ")";
}

}  // namespace

std::unique_ptr<FamilyMatch> match_dnabert2(GraphIndex& g) {
  auto m = std::make_unique<Dnabert2Match>();
  std::string why;
  {
    // On a probe index: a graph with position embeddings is another family's,
    // and this attempt must then explain nothing (the rejection of a broken
    // BERT export should come from the BERT recogniser).
    GraphIndex probe(g.graph(), g.consts());
    auto e = match_embeddings(probe, why);
    if (!e) {
      m->problems.push_back(why);
      return m;
    }
    if (!e->position.empty()) {
      m->problems.push_back("position embeddings '" + e->position + "': not an ALiBi (DNABERT-2) export");
      return m;
    }
  }
  m->emb = match_embeddings(g, why);
  Inputs in;
  for (const auto& gi : g.graph().input()) {
    if (g.is_const(gi.name())) continue;
    bool index = false;
    for (int c : g.consumers(gi.name())) index = index || (g.is_op(c, "Gather") && g.node(c).input(1) == gi.name());
    if (index) in.indices.push_back(gi.name());
    else if (in.mask.empty()) in.mask = gi.name();
    else m->problems.push_back("graph input '" + gi.name() + "' is neither token ids, token types nor the attention mask");
  }
  BiasCache cache;
  std::vector<LayerM> found;
  for (int i = 0; i < g.num_nodes(); ++i) {
    if (!g.is_op(i, "Softmax")) continue;
    std::string lw;
    auto l = match_layer(g, i, in, cache, lw);
    if (!l) m->problems.push_back(lw);
    else found.push_back(*l);
  }
  std::string cur = m->emb->ln.out;
  std::vector<bool> used(found.size(), false);
  for (;;) {
    int next = -1;
    for (size_t i = 0; i < found.size(); ++i)
      if (!used[i] && found[i].qkv.x == cur) next = static_cast<int>(i);
    if (next < 0) break;
    used[static_cast<size_t>(next)] = true;
    m->layers.push_back(found[static_cast<size_t>(next)]);
    cur = found[static_cast<size_t>(next)].ln2.out;
  }
  for (size_t i = 0; i < found.size(); ++i)
    if (!used[i]) m->problems.push_back("attention at " + g.describe(found[i].softmax) + " does not follow the previous layer");
  if (m->layers.empty()) {
    m->problems.push_back("no DNABERT-2 layer reads the embeddings' output '" + cur + "'");
    return m;
  }
  // DNABERT-2 zeroes padded rows of its output (h * mask[..., None]): the
  // identity on spinel's packed rows. Recognised by evaluating it.
  std::string out = cur;
  const int64_t H = g.consts().dims(m->emb->word)[1];
  for (int r : g.data_consumers(cur)) {
    if (!g.is_op(r, "Mul") || in.mask.empty()) continue;
    SubgraphEval ev(g);
    bind_inputs(ev, g, in, kBatch, 5);
    EvalTensor c = codes({kBatch, 5, H});
    for (double& x : c.v) x += 1;
    ev.bind(cur, c);
    const std::string y = g.node(r).output(0);
    auto t = ev.eval(y, why);
    bool ok = t && t->has_data && t->dims == c.dims;
    for (int64_t b = 0; ok && b < kBatch; ++b)
      for (int64_t j = 0; ok && j < 5; ++j)
        for (int64_t k = 0; ok && k < H; ++k) {
          const size_t i = static_cast<size_t>((b * 5 + j) * H + k);
          ok = t->v[i] == (keeps(b, j) ? c.v[i] : 0.0);
        }
    std::set<std::string> read;
    const std::set<int> dn = ok ? ev.data_nodes(y, &read) : std::set<int>{};
    if (!ok || read != std::set<std::string>{in.mask}) continue;
    g.cover(std::vector<int>(dn.begin(), dn.end()));
    out = y;
  }
  // Heads: [CLS] -> pooler dense + tanh (-> classifier).
  std::vector<std::string> heads;
  std::vector<int> readers = g.data_consumers(cur);
  if (out != cur) {
    const std::vector<int> more = g.data_consumers(out);
    readers.insert(readers.end(), more.begin(), more.end());
  }
  for (int r : readers) {
    if (!g.is_op(r, "Gather")) continue;
    const onnx::NodeProto& ga = g.node(r);
    const auto idx = g.scalar(ga.input(1));
    if (g.attr_int(r, "axis", 0) != 1 || !idx || *idx != 0 || !g.consts().dims(ga.input(1)).empty()) {
      m->problems.push_back(g.describe(r) + ": reads the hidden states but does not take the [CLS] token");
      continue;
    }
    std::vector<int> nodes = {r};
    std::string x = ga.output(0), out;
    const int d = g.sole_consumer(x);
    auto h = dense_at(g, d, x, nodes, out, why);
    if (!h) {
      m->problems.push_back("[CLS] head: " + why);
      continue;
    }
    const int t = g.sole_consumer(out);
    if (g.is_op(t, "Tanh") || (g.is_op(g.consumers(out).empty() ? -1 : g.consumers(out)[0], "Tanh"))) {
      const int tn = g.is_op(t, "Tanh") ? t : g.consumers(out)[0];
      nodes.push_back(tn);
      m->pooler = h;
      x = g.node(tn).output(0);
      m->pooler_is_output = g.is_graph_output(x);
      if (m->pooler_is_output) heads.push_back(x);
      int cls = -1;
      for (int c : g.data_consumers(x)) cls = c;
      if (cls >= 0) {
        auto c = dense_at(g, cls, x, nodes, out, why);
        if (!c) {
          m->problems.push_back("classifier: " + why);
          continue;
        }
        m->classifier = c;
        if (!g.is_graph_output(out)) m->problems.push_back("classifier result '" + out + "' is not a graph output");
        heads.push_back(out);
      }
    } else {
      m->classifier = h;
      if (!g.is_graph_output(out)) m->problems.push_back("classifier result '" + out + "' is not a graph output");
      heads.push_back(out);
    }
    g.cover(nodes);
  }
  check_graph_outputs(g, out, heads, m->problems);
  return m;
}

}  // namespace onnx_import
}  // namespace spinel

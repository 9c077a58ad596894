#include "converters/encoder_patterns.h"

#include <cmath>
#include <map>
#include <cstring>
#include <sstream>

namespace spinel {
namespace onnx_import {
namespace {

using onnx::TensorProto;

bool is_unary_passthrough(const GraphIndex& g, int n) {
  return g.is_op(n, "Unsqueeze") || g.is_op(n, "Squeeze") || g.is_op(n, "Cast") ||
         g.is_op(n, "Identity");
}

template <typename T>
std::optional<T> miss(std::string& why, const std::string& msg) {
  why = msg;
  return std::nullopt;
}

// Position ids 0..seq-1: a slice of a constant arange buffer, or a Range,
// optionally unsqueezed/expanded to [batch, seq].
struct PositionMatch {
  std::vector<int> nodes;
  int64_t limit = 0;
};
std::optional<PositionMatch> match_positions(const GraphIndex& g, const std::string& ids, std::string& why) {
  PositionMatch m;
  std::string v = ids;
  const std::string at = "position ids '" + ids + "': ";
  for (;;) {
    const int p = g.producer(v);
    if (p < 0) {
      return miss<PositionMatch>(why, at + (g.is_graph_input(v) ? "come from graph input '" + v + "'; only positions 0..seq-1 computed in the graph are supported" : "not computed in the graph"));
    }
    const onnx::NodeProto& n = g.node(p);
    if (is_unary_passthrough(g, p)) {
      m.nodes.push_back(p);
      v = n.input(0);
      continue;
    }
    if (g.is_op(p, "Expand")) {
      auto s = eval_shape(g, n.input(1), why);
      if (!s) return std::nullopt;
      m.nodes.insert(m.nodes.end(), s->nodes.begin(), s->nodes.end());
      m.nodes.push_back(p);
      v = n.input(0);
      continue;
    }
    if (g.is_op(p, "Slice")) {
      const std::string& data = n.input(0);
      if (!g.is_const(data)) return miss<PositionMatch>(why, at + g.describe(p) + " does not slice a constant buffer");
      const ConstValue buf = g.consts().value(data);
      for (int64_t i = 0; i < buf.numel(); ++i)
        if (buf.values[static_cast<size_t>(i)] != static_cast<double>(i))
          return miss<PositionMatch>(why, at + "buffer '" + data + "' is not 0, 1, 2, ...");
      const int64_t last_axis = static_cast<int64_t>(buf.dims.size()) - 1;
      if (n.input_size() < 3 || !g.is_const(n.input(1)))
        return miss<PositionMatch>(why, at + g.describe(p) + ": start is not a constant");
      for (double s : g.consts().value(n.input(1)).values)
        if (s != 0) return miss<PositionMatch>(why, at + g.describe(p) + ": positions do not start at 0");
      if (n.input_size() > 3 && !n.input(3).empty()) {
        if (!g.is_const(n.input(3))) return miss<PositionMatch>(why, at + g.describe(p) + ": axes are not constant");
        for (double a : g.consts().value(n.input(3)).values)
          if (a != -1 && a != static_cast<double>(last_axis))
            return miss<PositionMatch>(why, at + g.describe(p) + ": slices an axis other than the last");
      }
      if (n.input_size() > 4 && !n.input(4).empty()) {
        const auto step = g.scalar(n.input(4));
        if (!step || *step != 1) return miss<PositionMatch>(why, at + g.describe(p) + ": step is not 1");
      }
      auto ends = eval_shape(g, n.input(2), why);
      if (!ends) return std::nullopt;
      m.nodes.insert(m.nodes.end(), ends->nodes.begin(), ends->nodes.end());
      m.nodes.push_back(p);
      m.limit = buf.dims.empty() ? 0 : buf.dims.back();
      return m;
    }
    if (g.is_op(p, "Range")) {
      const auto start = g.scalar(n.input(0)), delta = g.scalar(n.input(2));
      if (!start || *start != 0 || !delta || *delta != 1)
        return miss<PositionMatch>(why, at + g.describe(p) + " is not Range(0, seq, 1)");
      auto limit = eval_shape(g, n.input(1), why);
      if (!limit) return std::nullopt;
      m.nodes.insert(m.nodes.end(), limit->nodes.begin(), limit->nodes.end());
      m.nodes.push_back(p);
      return m;
    }
    return miss<PositionMatch>(why, at + g.describe(p) + " is not part of a position-id computation");
  }
}

// Gather(table, ids) with a 2-D float constant table.
bool is_table_gather(const GraphIndex& g, int n) {
  if (!g.is_op(n, "Gather") || g.node(n).input_size() != 2 || g.attr_int(n, "axis", 0) != 0) return false;
  const std::string& t = g.node(n).input(0);
  return g.is_const(t) && g.consts().elem_type(t) == TensorProto::FLOAT && g.consts().dims(t).size() == 2;
}

// An index tensor every element of which is the same constant: a constant
// buffer (or a slice of it) or ConstantOfShape, broadcast by Expand to the
// input's shape. torch exports BertModel's all-zero token_type_ids buffer so
// when the graph has no token_type_ids input.
struct ConstantIndex {
  std::vector<int> nodes;
  int64_t value = 0;
};
std::optional<ConstantIndex> match_constant_index(const GraphIndex& g, const std::string& ids, std::string& why) {
  ConstantIndex m;
  std::string v = ids;
  const std::string at = "index '" + ids + "': ";
  auto all_same = [&](const ConstValue& c) -> std::optional<int64_t> {
    if (c.values.empty()) return std::nullopt;
    for (double x : c.values)
      if (x != c.values[0]) return std::nullopt;
    if (!(c.values[0] >= 0 && c.values[0] < 2147483648.0)) return std::nullopt;
    return static_cast<int64_t>(c.values[0]);
  };
  for (;;) {
    if (g.is_const(v)) {
      auto same = all_same(g.consts().value(v));
      if (!same) return miss<ConstantIndex>(why, at + "constant '" + v + "' does not hold one index everywhere");
      m.value = *same;
      return m;
    }
    const int p = g.producer(v);
    if (p < 0) return miss<ConstantIndex>(why, at + "'" + v + "' is not a constant");
    const onnx::NodeProto& n = g.node(p);
    if (is_unary_passthrough(g, p)) {
      // Unsqueeze/Squeeze axes (opset >= 13) are constants or shapes, never data.
      for (int i = 1; i < n.input_size(); ++i) {
        auto s = shape_only_nodes(g, n.input(i), why);
        if (!s) return std::nullopt;
        m.nodes.insert(m.nodes.end(), s->begin(), s->end());
      }
      m.nodes.push_back(p);
      v = n.input(0);
    } else if (g.is_op(p, "Expand") || g.is_op(p, "Slice")) {
      for (int i = 1; i < n.input_size(); ++i) {
        auto s = shape_only_nodes(g, n.input(i), why);
        if (!s) return std::nullopt;
        m.nodes.insert(m.nodes.end(), s->begin(), s->end());
      }
      m.nodes.push_back(p);
      v = n.input(0);
    } else if (g.is_op(p, "ConstantOfShape")) {
      auto s = shape_only_nodes(g, n.input(0), why);
      if (!s) return std::nullopt;
      m.nodes.insert(m.nodes.end(), s->begin(), s->end());
      m.nodes.push_back(p);
      m.value = 0;
      if (const onnx::AttributeProto* a = g.attr(p, "value")) {
        double x = 0;
        const onnx::TensorProto& t = a->t();
        if (t.int64_data_size() == 1) x = static_cast<double>(t.int64_data(0));
        else if (t.int32_data_size() == 1) x = t.int32_data(0);
        else if (t.raw_data().size() == 8 && t.data_type() == onnx::TensorProto::INT64) {
          int64_t i = 0;
          std::memcpy(&i, t.raw_data().data(), 8);
          x = static_cast<double>(i);
        } else if (t.raw_data().size() == 4 && t.data_type() == onnx::TensorProto::INT32) {
          int32_t i = 0;
          std::memcpy(&i, t.raw_data().data(), 4);
          x = i;
        } else {
          return miss<ConstantIndex>(why, at + g.describe(p) + ": fill value is not one integer");
        }
        if (!(x >= 0 && x < 2147483648.0)) return miss<ConstantIndex>(why, at + g.describe(p) + ": fill value is negative");
        m.value = static_cast<int64_t>(x);
      }
      return m;
    } else {
      return miss<ConstantIndex>(why, at + g.describe(p) + " does not broadcast a constant index");
    }
  }
}

}  // namespace

std::optional<EmbeddingMatch> match_embeddings(GraphIndex& g, std::string& why) {
  std::vector<int> by_input, other;
  for (int i = 0; i < g.num_nodes(); ++i) {
    if (!is_table_gather(g, i)) continue;
    (g.is_graph_input(g.node(i).input(1)) ? by_input : other).push_back(i);
  }
  if (by_input.empty()) return miss<EmbeddingMatch>(why, "no embedding lookup (Gather of a 2-D weight by a graph input) found");
  // Word embeddings are read by input_ids, or failing that are the biggest table.
  auto rows = [&](int n) { return g.consts().dims(g.node(n).input(0))[0]; };
  int word = -1;
  for (int n : by_input)
    if (g.node(n).input(1) == "input_ids") word = n;
  if (word < 0)
    for (int n : by_input)
      if (word < 0 || rows(n) > rows(word)) word = n;
  int type = -1;
  for (int n : by_input) {
    if (n == word) continue;
    if (type >= 0) return miss<EmbeddingMatch>(why, "more than two embedding tables are indexed by graph inputs");
    type = n;
  }
  EmbeddingMatch e;
  e.word_gather = word;
  e.word = g.node(word).input(0);
  if (type >= 0) e.token_type = g.node(type).input(0);
  std::vector<int> gathers = {word};
  if (type >= 0) gathers.push_back(type);
  const int64_t hidden = g.consts().dims(e.word)[1];

  // Gathers whose output is added to the word embeddings: the position lookup,
  // and the constant token-type row of a graph without token_type_ids.
  std::vector<std::string> terms;
  for (int n : gathers) terms.push_back(g.node(n).output(0));
  for (int n : other) {
    std::string pwhy;
    if (auto pos = match_positions(g, g.node(n).input(1), pwhy)) {
      if (!e.position.empty()) return miss<EmbeddingMatch>(why, "two position-embedding lookups found");
      e.position = g.node(n).input(0);
      e.position_limit = pos->limit;
      g.cover(pos->nodes);
    } else if (auto row = match_constant_index(g, g.node(n).input(1), pwhy)) {
      if (!e.token_type.empty())
        return miss<EmbeddingMatch>(why, g.describe(n) + ": a second token-type lookup (by a constant index)");
      const int64_t table_rows = rows(n);
      if (row->value >= table_rows)
        return miss<EmbeddingMatch>(why, g.describe(n) + ": constant index " + std::to_string(row->value) + " is outside the table's " + std::to_string(table_rows) + " rows");
      e.token_type = g.node(n).input(0);
      e.token_type_row = row->value;
      g.cover(row->nodes);
    } else {
      continue;
    }
    gathers.push_back(n);
    terms.push_back(g.node(n).output(0));
  }
  for (int n : gathers) {
    if (g.consts().dims(g.node(n).input(0))[1] != hidden)
      return miss<EmbeddingMatch>(why, g.describe(n) + ": table width differs from the word embeddings' " + std::to_string(hidden));
  }

  // The lookups are summed by Add nodes into one value.
  std::vector<int> adds;
  while (terms.size() > 1) {
    bool merged = false;
    for (size_t i = 0; i < terms.size() && !merged; ++i) {
      const int add = g.sole_consumer(terms[i]);
      if (!g.is_op(add, "Add")) continue;
      const onnx::NodeProto& a = g.node(add);
      for (size_t j = 0; j < terms.size() && !merged; ++j) {
        if (i == j) continue;
        if ((a.input(0) == terms[i] && a.input(1) == terms[j]) || (a.input(1) == terms[i] && a.input(0) == terms[j])) {
          if (g.sole_consumer(terms[j]) != add) continue;
          adds.push_back(add);
          terms[std::min(i, j)] = a.output(0);
          terms.erase(terms.begin() + static_cast<long>(std::max(i, j)));
          merged = true;
        }
      }
    }
    if (!merged) return miss<EmbeddingMatch>(why, "the embedding lookups are not simply added together (near " + g.describe(word) + ")");
  }
  auto ln = match_layernorm(g, terms[0], why);
  if (!ln) return std::nullopt;
  if (g.consts().dims(ln->gamma).back() != hidden)
    return miss<EmbeddingMatch>(why, g.describe(ln->nodes.back()) + ": LayerNorm width differs from hidden size " + std::to_string(hidden));
  e.ln = *ln;
  g.cover(gathers);
  g.cover(adds);
  g.cover(ln->nodes);
  return e;
}

namespace {

// Mul(Sub(1, Cast(Unsqueeze(Unsqueeze(mask)))), fill): the additive attention mask.
std::optional<MaskMatch> match_mask(GraphIndex& g, const std::string& value, std::vector<int>& nodes, std::string& why) {
  const std::string at = "attention mask '" + value + "': ";
  const int mul = g.producer_of_type(value, "Mul");
  if (mul < 0) return miss<MaskMatch>(why, at + "not computed by Mul(1 - mask, fill)");
  std::optional<double> fill;
  std::string lhs;
  for (int i = 0; i < 2; ++i) {
    if (auto s = g.scalar(g.node(mul).input(i))) {
      fill = s;
      lhs = g.node(mul).input(1 - i);
    }
  }
  if (!fill) return miss<MaskMatch>(why, at + g.describe(mul) + ": no scalar fill value");
  if (!(*fill <= -1000.0)) return miss<MaskMatch>(why, at + "fill value " + std::to_string(*fill) + " is not a large negative number");
  const int sub = g.producer_of_type(lhs, "Sub");
  if (sub < 0 || g.scalar(g.node(sub).input(0)) != 1.0) return miss<MaskMatch>(why, at + "expected Sub(1, mask) before " + g.describe(mul));
  nodes = {mul, sub};
  std::string v = g.node(sub).input(1);
  while (!g.is_graph_input(v)) {
    const int p = g.producer(v);
    if (p < 0 || !(is_unary_passthrough(g, p) || g.is_op(p, "Slice")))
      return miss<MaskMatch>(why, at + (p < 0 ? "'" + v + "' is not a graph input" : g.describe(p) + " is not an unsqueeze/cast of the mask input"));
    if (g.is_op(p, "Slice"))
      for (int i = 1; i < g.node(p).input_size(); ++i)
        if (!g.node(p).input(i).empty() && !g.is_const(g.node(p).input(i)))
          return miss<MaskMatch>(why, at + g.describe(p) + " has non-constant bounds");
    nodes.push_back(p);
    v = g.node(p).input(0);
  }
  MaskMatch m;
  m.input = v;
  m.fill = *fill;
  return m;
}

// Where(mask == 0 broadcast to the scores, fill, scores): DistilBERT's
// masked_fill(mask, finfo.min). `where` is the Where node; scores are input 2.
std::optional<MaskMatch> match_where_mask(GraphIndex& g, int where, std::vector<int>& nodes, std::string& why) {
  const std::string at = "attention mask of " + g.describe(where) + ": ";
  const onnx::NodeProto& w = g.node(where);
  if (w.input_size() != 3) return miss<MaskMatch>(why, at + "Where needs 3 inputs");
  const auto fill = g.scalar(w.input(1));
  if (!fill) return miss<MaskMatch>(why, at + "the value put at masked positions is not a scalar constant");
  if (!(*fill <= -1000.0)) return miss<MaskMatch>(why, at + "fill value " + std::to_string(*fill) + " is not a large negative number");
  nodes = {where};
  bool equal_zero = false;
  std::string v = w.input(0);
  while (!g.is_graph_input(v)) {
    const int p = g.producer(v);
    if (p < 0) return miss<MaskMatch>(why, at + "'" + v + "' is not computed from a graph input");
    const onnx::NodeProto& n = g.node(p);
    if (g.is_op(p, "Equal")) {
      // mask == 0: true where the token is padding.
      if (equal_zero) return miss<MaskMatch>(why, at + g.describe(p) + ": two comparisons");
      const int c = g.scalar(n.input(1)) ? 1 : g.scalar(n.input(0)) ? 0 : -1;
      if (c < 0 || *g.scalar(n.input(c)) != 0.0) return miss<MaskMatch>(why, at + g.describe(p) + " does not compare the mask with 0");
      equal_zero = true;
      nodes.push_back(p);
      v = n.input(1 - c);
      continue;
    }
    if (!(is_unary_passthrough(g, p) || g.is_op(p, "Expand") || g.is_op(p, "Reshape")))
      return miss<MaskMatch>(why, at + g.describe(p) + " is not a reshape/expand/cast of the mask input");
    // Targets of Expand/Reshape and Unsqueeze axes: shapes and constants only.
    for (int i = 1; i < n.input_size(); ++i) {
      auto s = shape_only_nodes(g, n.input(i), why);
      if (!s) return std::nullopt;
      nodes.insert(nodes.end(), s->begin(), s->end());
    }
    nodes.push_back(p);
    v = n.input(0);
  }
  if (!equal_zero) return miss<MaskMatch>(why, at + "the condition is not mask == 0");
  MaskMatch m;
  m.input = v;
  m.fill = *fill;
  m.where = true;
  return m;
}

std::optional<AttentionMatch> match_attention(GraphIndex& g, int softmax, std::map<std::string, MaskMatch>& masks,
                                              std::optional<MaskMatch>& mask_out, std::string& why) {
  AttentionMatch a;
  a.softmax = softmax;
  const std::string at = "attention at " + g.describe(softmax) + ": ";
  const int64_t axis = g.attr_int(softmax, "axis", -1);
  if (axis != -1 && axis != 3) return miss<AttentionMatch>(why, at + "softmax is not over the last axis");
  std::vector<int> nodes = {softmax};

  // Softmax(Add(scale(Q.K^T), mask)); the mask Add is optional.
  std::string scores = g.node(softmax).input(0);
  if (g.sole_consumer(scores) != softmax) return miss<AttentionMatch>(why, at + "scores are read elsewhere too");
  // Scores are a MatMul, or a Div/Mul scaling one (the mask's Mul scales a Sub).
  auto is_score_node = [&](const std::string& v) {
    const int p = g.producer(v);
    if (g.is_op(p, "MatMul")) return true;
    return (g.is_op(p, "Div") || g.is_op(p, "Mul")) && g.is_op(g.producer(g.node(p).input(0)), "MatMul");
  };
  if (const int add = g.producer_of_type(scores, "Add"); add >= 0) {
    const onnx::NodeProto& n = g.node(add);
    const int s = is_score_node(n.input(0)) ? 0 : 1;
    a.mask = n.input(1 - s);
    if (!masks.count(a.mask)) {
      std::vector<int> mnodes;
      auto m = match_mask(g, a.mask, mnodes, why);
      if (!m) return std::nullopt;
      masks[a.mask] = *m;
      g.cover(mnodes);
    }
    mask_out = masks[a.mask];
    nodes.push_back(add);
    scores = n.input(s);
    if (g.sole_consumer(scores) != add) return miss<AttentionMatch>(why, at + "scores are read elsewhere too");
  } else if (const int where = g.producer_of_type(scores, "Where"); where >= 0) {
    std::vector<int> mnodes;
    auto m = match_where_mask(g, where, mnodes, why);
    if (!m) return std::nullopt;
    a.mask = g.node(where).output(0);
    masks[a.mask] = *m;
    mask_out = *m;
    g.cover(mnodes);
    scores = g.node(where).input(2);
    // The Shape that broadcasts the condition reads the scores too: not data.
    if (g.sole_consumer(scores) != where) return miss<AttentionMatch>(why, at + "scores are read elsewhere too");
  }
  int mm = g.producer_of_type(scores, "MatMul");
  if (mm < 0) {
    const int sc = g.producer(scores);
    if (!(g.is_op(sc, "Div") || g.is_op(sc, "Mul")))
      return miss<AttentionMatch>(why, at + "no Q.K^T MatMul (with Div/Mul scale) before the softmax");
    const auto c = g.scalar(g.node(sc).input(1));
    if (!c || *c == 0) return miss<AttentionMatch>(why, at + g.describe(sc) + ": scale is not a scalar constant");
    a.scale = g.is_op(sc, "Div") ? 1.0 / *c : *c;
    nodes.push_back(sc);
    mm = g.producer_of_type(g.node(sc).input(0), "MatMul");
    if (mm < 0 || g.sole_consumer(g.node(mm).output(0)) != sc)
      return miss<AttentionMatch>(why, at + g.describe(sc) + " does not scale a Q.K^T MatMul");
  }
  nodes.push_back(mm);
  const onnx::NodeProto& qk = g.node(mm);
  // Q may be scaled before the MatMul (DistilBERT: q / sqrt(head_dim)).
  std::string q_heads = qk.input(0);
  int q_reader = mm;
  if (const int qs = g.producer(q_heads); g.is_op(qs, "Div") || g.is_op(qs, "Mul")) {
    const auto c = g.scalar(g.node(qs).input(1));
    if (!c || *c == 0 || !std::isfinite(*c)) return miss<AttentionMatch>(why, at + g.describe(qs) + ": Q is scaled by something other than a scalar constant");
    if (g.sole_consumer(q_heads) != mm) return miss<AttentionMatch>(why, at + "scaled Q is read elsewhere too");
    a.scale *= g.is_op(qs, "Div") ? 1.0 / *c : *c;
    nodes.push_back(qs);
    q_heads = g.node(qs).input(0);
    q_reader = qs;
  }
  auto qh = match_head_split(g, q_heads, {0, 2, 1, 3}, why);
  if (!qh) return std::nullopt;
  auto kh = match_head_split(g, qk.input(1), {0, 2, 3, 1}, why);
  if (!kh) return std::nullopt;
  if (g.sole_consumer(q_heads) != q_reader || g.sole_consumer(qk.input(1)) != mm)
    return miss<AttentionMatch>(why, at + "Q or K heads are read elsewhere too");

  // probs . V, then heads merged back: Transpose(0,2,1,3) -> Reshape [b, s, hidden].
  const std::string probs = g.node(softmax).output(0);
  const int pv = g.sole_consumer(probs);
  if (!g.is_op(pv, "MatMul") || g.node(pv).input(0) != probs)
    return miss<AttentionMatch>(why, at + "softmax output is not multiplied by V");
  auto vh = match_head_split(g, g.node(pv).input(1), {0, 2, 1, 3}, why);
  if (!vh) return std::nullopt;
  if (g.sole_consumer(g.node(pv).input(1)) != pv) return miss<AttentionMatch>(why, at + "V heads are read elsewhere too");
  const int tr = g.sole_consumer(g.node(pv).output(0));
  if (!g.is_op(tr, "Transpose") || g.attr_ints(tr, "perm") != std::vector<int64_t>{0, 2, 1, 3})
    return miss<AttentionMatch>(why, at + "context is not transposed back with perm (0,2,1,3)");
  const int rs = g.sole_consumer(g.node(tr).output(0));
  if (!g.is_op(rs, "Reshape") || g.node(rs).input(0) != g.node(tr).output(0))
    return miss<AttentionMatch>(why, at + g.describe(tr) + " is not followed by a Reshape merging the heads");
  auto merged = eval_shape(g, g.node(rs).input(1), why);
  if (!merged) return std::nullopt;
  nodes.insert(nodes.end(), {pv, tr, rs});
  nodes.insert(nodes.end(), merged->nodes.begin(), merged->nodes.end());
  a.ctx = g.node(rs).output(0);

  // The three projections, all reading the same hidden states.
  std::string lwhy;
  auto q = match_linear_producing(g, qh->x, lwhy);
  auto k = q ? match_linear_producing(g, kh->x, lwhy) : std::nullopt;
  auto v = k ? match_linear_producing(g, vh->x, lwhy) : std::nullopt;
  if (!v) return miss<AttentionMatch>(why, at + "Q/K/V projection: " + lwhy);
  a.q = *q;
  a.k = *k;
  a.v = *v;
  a.x = q->x;
  if (k->x != a.x || v->x != a.x) return miss<AttentionMatch>(why, at + "Q, K and V read different inputs");
  const int64_t hidden = q->in_features;
  for (const LinearMatch* l : {&a.q, &a.k, &a.v}) {
    if (l->in_features != hidden || l->out_features != hidden)
      return miss<AttentionMatch>(why, at + g.describe(l->matmul) + ": weight is [" + std::to_string(l->in_features) + ", " + std::to_string(l->out_features) + "], expected [" + std::to_string(hidden) + ", " + std::to_string(hidden) + "]");
    if (g.data_consumers(l->out).size() != 1 || g.is_graph_output(l->out))
      return miss<AttentionMatch>(why, at + g.describe(l->matmul) + ": projection is read elsewhere too");
  }
  if (merged->known_length && !merged->dims.empty() && merged->dims.back() && *merged->dims.back() != hidden && *merged->dims.back() != -1)
    return miss<AttentionMatch>(why, at + g.describe(rs) + ": merges heads into width " + std::to_string(*merged->dims.back()) + ", expected " + std::to_string(hidden));

  // Heads: the Reshape target [.., heads, head_dim] is authoritative; else the scale.
  for (const HeadSplit* h : {&*qh, &*kh, &*vh}) {
    int64_t heads = h->heads;
    if (heads == 0 && h->head_dim > 0 && hidden % h->head_dim == 0) heads = hidden / h->head_dim;
    if (heads == 0) continue;
    if (a.heads != 0 && heads != a.heads) return miss<AttentionMatch>(why, at + "Q, K and V are split into different head counts");
    a.heads = heads;
    // Divided, not multiplied: both come from a Reshape constant of the file.
    if (h->head_dim > 0 && h->heads > 0 && (hidden % h->heads != 0 || hidden / h->heads != h->head_dim))
      return miss<AttentionMatch>(why, at + "heads " + std::to_string(h->heads) + " x head_dim " + std::to_string(h->head_dim) + " != hidden " + std::to_string(hidden));
  }
  if (a.heads == 0) {
    const double head_dim = 1.0 / (a.scale * a.scale);
    const int64_t d = std::llround(head_dim);
    if (a.scale <= 0 || std::fabs(head_dim - static_cast<double>(d)) > 1e-3 * head_dim || d <= 0 || hidden % d != 0)
      return miss<AttentionMatch>(why, at + "cannot tell the number of heads (no constant Reshape target, scale " + std::to_string(a.scale) + ")");
    a.heads = hidden / d;
  }
  if (hidden % a.heads != 0)
    return miss<AttentionMatch>(why, at + "hidden " + std::to_string(hidden) + " is not divisible by " + std::to_string(a.heads) + " heads");
  for (const HeadSplit* h : {&*qh, &*kh, &*vh}) nodes.insert(nodes.end(), h->nodes.begin(), h->nodes.end());
  for (const LinearMatch* l : {&a.q, &a.k, &a.v}) nodes.insert(nodes.end(), l->nodes.begin(), l->nodes.end());
  g.cover(nodes);
  return a;
}

// Linear read by `x`'s only MatMul consumer whose weight is a constant.
std::optional<LinearMatch> linear_after(GraphIndex& g, const std::string& x, std::string& why) {
  int found = -1;
  for (int c : g.data_consumers(x)) {
    if (!g.is_op(c, "MatMul") || g.node(c).input(0) != x || !g.is_const(g.node(c).input(1))) continue;
    if (found >= 0) return miss<LinearMatch>(why, "'" + x + "' feeds two MatMuls");
    found = c;
  }
  if (found < 0) return miss<LinearMatch>(why, "'" + x + "' does not feed a MatMul with a constant weight");
  return match_linear(g, found, why);
}

// Add(y, residual) as the only reader of y; returns the Add node.
int residual_add(const GraphIndex& g, const std::string& y, const std::string& residual) {
  const int add = g.sole_consumer(y);
  if (!g.is_op(add, "Add")) return -1;
  const onnx::NodeProto& n = g.node(add);
  const bool ok = (n.input(0) == y && n.input(1) == residual) || (n.input(1) == y && n.input(0) == residual);
  return ok ? add : -1;
}

std::optional<LayerMatch> match_layer(GraphIndex& g, const AttentionMatch& att, std::string& why) {
  LayerMatch l;
  l.att = att;
  const int64_t hidden = att.q.in_features;
  auto at = [&](int node) { return g.describe(node) + ": "; };

  auto ao = linear_after(g, att.ctx, why);
  if (!ao) return std::nullopt;
  if (ao->in_features != hidden || ao->out_features != hidden)
    return miss<LayerMatch>(why, at(ao->matmul) + "attention output weight is not [hidden, hidden]");
  const int res1 = residual_add(g, ao->out, att.x);
  if (res1 < 0) return miss<LayerMatch>(why, at(ao->matmul) + "attention output is not added to the layer input");
  g.cover(ao->nodes);
  g.cover(res1);
  auto ln1 = match_layernorm(g, g.node(res1).output(0), why);
  if (!ln1) return std::nullopt;
  g.cover(ln1->nodes);

  auto in = linear_after(g, ln1->out, why);
  if (!in) return std::nullopt;
  if (in->in_features != hidden) return miss<LayerMatch>(why, at(in->matmul) + "intermediate weight does not read the hidden size");
  g.cover(in->nodes);
  auto gelu = match_gelu(g, in->out, why);
  if (!gelu) return std::nullopt;
  g.cover(gelu->nodes);
  auto out = linear_after(g, gelu->out, why);
  if (!out) return std::nullopt;
  if (out->in_features != in->out_features || out->out_features != hidden)
    return miss<LayerMatch>(why, at(out->matmul) + "output weight is not [intermediate, hidden]");
  if (g.data_consumers(gelu->out).size() != 1) return miss<LayerMatch>(why, "activation '" + gelu->out + "' is read elsewhere too");
  const int res2 = residual_add(g, out->out, ln1->out);
  if (res2 < 0) return miss<LayerMatch>(why, at(out->matmul) + "output is not added to the attention block's result");
  g.cover(out->nodes);
  g.cover(res2);
  auto ln2 = match_layernorm(g, g.node(res2).output(0), why);
  if (!ln2) return std::nullopt;
  g.cover(ln2->nodes);
  l.attn_out = *ao;
  l.ln1 = *ln1;
  l.inter = *in;
  l.gelu = *gelu;
  l.out = *out;
  l.ln2 = *ln2;
  return l;
}

}  // namespace

EncoderMatch match_post_ln_encoder(GraphIndex& g, const std::string& input) {
  EncoderMatch b;
  std::string why;

  // Every Softmax is one self-attention; match each on its own.
  std::map<std::string, MaskMatch> masks;
  std::vector<AttentionMatch> atts;
  for (int i = 0; i < g.num_nodes(); ++i) {
    if (!g.is_op(i, "Softmax")) continue;
    std::optional<MaskMatch> mask;
    auto a = match_attention(g, i, masks, mask, why);
    if (!a) {
      b.problems.push_back(why);
      continue;
    }
    if (mask) {
      // An additive mask is computed once and shared; a Where mask once per layer.
      if (b.mask && (b.mask->input != mask->input || b.mask->fill != mask->fill || b.mask->where != mask->where))
        b.problems.push_back("attention layers use different masks (" + g.describe(i) + ")");
      b.mask = mask;
    }
    atts.push_back(*a);
  }
  size_t additive = 0;
  for (const auto& [value, m] : masks) additive += !m.where;
  if (additive > 1) b.problems.push_back("the attention mask is computed more than once");

  // Chain the layers from the embeddings' output.
  std::string cur = input;
  std::vector<bool> used(atts.size(), false);
  for (;;) {
    int next = -1;
    for (size_t i = 0; i < atts.size(); ++i)
      if (!used[i] && atts[i].x == cur) next = static_cast<int>(i);
    if (next < 0) break;
    used[static_cast<size_t>(next)] = true;
    auto layer = match_layer(g, atts[static_cast<size_t>(next)], why);
    if (!layer) {
      b.problems.push_back("layer " + std::to_string(b.layers.size()) + ": " + why);
      b.output = cur;
      return b;
    }
    b.layers.push_back(*layer);
    cur = layer->ln2.out;
  }
  for (size_t i = 0; i < atts.size(); ++i) {
    if (used[i]) continue;
    b.problems.push_back("attention at " + g.describe(atts[i].softmax) + " does not follow the previous layer");
    // Match the rest of that layer anyway, so the report lists only the nodes
    // that broke the chain rather than the whole layer.
    match_layer(g, atts[i], why);
  }
  if (b.layers.empty()) b.problems.push_back("no encoder layer reads the embeddings' output '" + cur + "'");
  b.output = cur;
  return b;
}

void check_graph_outputs(const GraphIndex& g, const std::string& hidden,
                         const std::vector<std::string>& heads, std::vector<std::string>& problems) {
  for (const auto& o : g.graph().output()) {
    if (o.name() == hidden) continue;
    bool known = false;
    for (const std::string& h : heads) known = known || h == o.name();
    if (known) continue;
    std::string expect = "'" + hidden + "'";
    for (const std::string& h : heads) expect += ", '" + h + "'";
    problems.push_back("graph output '" + o.name() + "' is neither the last layer's output nor a recognised head (outputs may be " + expect + ")");
  }
  if (g.graph().output_size() == 0) problems.push_back("the graph has no outputs");
}

std::string mask_form(const std::optional<MaskMatch>& mask) {
  if (!mask) return "none";
  std::string f;
  if (mask->fill == -10000.0) {
    f = "-10000";
  } else if (mask->fill <= -3.4028234e38) {
    f = "float32-min";
  } else {
    std::ostringstream os;
    os << mask->fill;
    f = os.str();
  }
  return mask->where ? f + " (Where)" : f;
}

}  // namespace onnx_import
}  // namespace spinel

#include "converters/ir_builder.h"

#include <cmath>
#include <cstring>

#include "runtime/error.h"

namespace spinel {
namespace onnx_import {

int32_t IrBuilder::value(const std::string& name, int64_t width, Rows rows) {
  out_.graph.values.push_back(Value{name, width, rows});
  return static_cast<int32_t>(out_.graph.values.size() - 1);
}

std::vector<float> IrBuilder::floats(const std::string& onnx_name, int64_t expect) const {
  std::vector<float> f = consts_.floats(onnx_name);
  if (static_cast<int64_t>(f.size()) != expect)
    fail("tensor '", onnx_name, "' has ", f.size(), " elements, expected ", expect);
  for (size_t i = 0; i < f.size(); ++i)
    if (!std::isfinite(f[i]))
      fail("tensor '", onnx_name, "' holds ", f[i], " at element ", i, "; weights must be finite");
  return f;
}

int32_t IrBuilder::tensor(const std::string& name, std::vector<int64_t> shape, const std::vector<float>& data) {
  return out_.add_tensor(name, DType::F32, std::move(shape), data.data(), data.size() * sizeof(float));
}

int32_t IrBuilder::weight(const std::string& name, const std::string& onnx_name, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  if (onnx_name.empty()) return tensor(name, std::move(shape), std::vector<float>(static_cast<size_t>(n), 0.f));
  return tensor(name, std::move(shape), floats(onnx_name, n));
}

int32_t IrBuilder::add(Op op) {
  const int32_t out = op.out;
  out_.graph.ops.push_back(std::move(op));
  return out;
}

int32_t lower_embeddings(const GraphIndex& g, const EmbeddingMatch& e, IrBuilder& ir) {
  const ConstantTable& c = g.consts();
  const std::vector<int64_t> word_dims = c.dims(e.word);
  const int64_t vocab = word_dims[0], hidden = word_dims[1];
  ModelConfig& cfg = ir.config();
  cfg.vocab_size = vocab;
  cfg.hidden_size = hidden;
  cfg.layer_norm_eps = e.ln.eps;
  cfg.max_position = 0;
  if (!e.position.empty()) {
    cfg.max_position = c.dims(e.position)[0];
    if (e.position_limit > 0 && e.position_limit < cfg.max_position) cfg.max_position = e.position_limit;
  }

  Op emb;
  emb.kind = OpKind::Embedding;
  emb.name = g.node(e.word_gather).name();
  emb.out = ir.value("embeddings", hidden);
  emb.w[slot::kWord] = ir.weight("embeddings.word", e.word, {vocab, hidden});
  if (!e.position.empty())
    emb.w[slot::kPosition] = ir.weight("embeddings.position", e.position, c.dims(e.position));
  cfg.type_vocab_size = 0;
  if (!e.token_type.empty()) {
    const std::vector<int64_t> td = c.dims(e.token_type);
    if (e.token_type_row < 0) {
      cfg.type_vocab_size = td[0];
      emb.w[slot::kTokenType] = ir.weight("embeddings.token_type", e.token_type, td);
    } else {
      // Every token adds the same row: a one-row table, read with type 0.
      const std::vector<float> all = ir.floats(e.token_type, td[0] * td[1]);
      const auto row = all.begin() + e.token_type_row * td[1];
      cfg.type_vocab_size = 1;
      emb.w[slot::kTokenType] = ir.tensor("embeddings.token_type", {1, td[1]}, std::vector<float>(row, row + td[1]));
    }
  }
  emb.w[slot::kEmbGamma] = ir.weight("embeddings.ln.gamma", e.ln.gamma, {hidden});
  emb.w[slot::kEmbBeta] = ir.weight("embeddings.ln.beta", e.ln.beta, {hidden});
  emb.eps = e.ln.eps;
  return ir.add(std::move(emb));
}

int32_t lower_post_ln_layers(const GraphIndex& g, const std::vector<LayerMatch>& layers, int32_t in,
                             IrBuilder& ir) {
  ModelConfig& cfg = ir.config();
  const int64_t hidden = cfg.hidden_size;
  cfg.num_layers = static_cast<int64_t>(layers.size());
  cfg.num_heads = layers.at(0).att.heads;
  cfg.intermediate_size = layers[0].inter.out_features;
  cfg.hidden_act = layers[0].gelu.act;
  int32_t cur = in;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerMatch& l = layers[i];
    const std::string p = "layer." + std::to_string(i) + ".";
    const int64_t inter = l.inter.out_features;
    if (l.att.q.in_features != hidden)
      fail("layer ", i, " (", g.describe(l.att.softmax), ") reads width ", l.att.q.in_features, ", hidden size is ", hidden);
    if (l.att.heads != cfg.num_heads || inter != cfg.intermediate_size || l.gelu.act != cfg.hidden_act)
      fail("layer ", i, " (", g.describe(l.att.softmax), ") differs from layer 0 in heads, intermediate size or activation");

    // Q | K | V side by side: row r of the fused weight is Wq[r] | Wk[r] | Wv[r].
    const LinearMatch* proj[3] = {&l.att.q, &l.att.k, &l.att.v};
    std::vector<float> w(static_cast<size_t>(hidden * 3 * hidden));
    std::vector<float> bias(static_cast<size_t>(3 * hidden), 0.f);
    bool any_bias = false;
    for (int j = 0; j < 3; ++j) {
      const std::vector<float> wj = ir.floats(proj[j]->weight, hidden * hidden);
      for (int64_t r = 0; r < hidden; ++r)
        std::memcpy(&w[static_cast<size_t>(r * 3 * hidden + j * hidden)], &wj[static_cast<size_t>(r * hidden)],
                    static_cast<size_t>(hidden) * sizeof(float));
      if (!proj[j]->bias.empty()) {
        const std::vector<float> bj = ir.floats(proj[j]->bias, hidden);
        std::memcpy(&bias[static_cast<size_t>(j * hidden)], bj.data(), bj.size() * sizeof(float));
        any_bias = true;
      }
    }
    Op qkv;
    qkv.kind = OpKind::Linear;
    qkv.name = g.node(l.att.q.matmul).name() + " + " + g.node(l.att.k.matmul).name() + " + " +
               g.node(l.att.v.matmul).name();
    qkv.in0 = cur;
    qkv.out = ir.value(p + "qkv", 3 * hidden);
    qkv.w[slot::kWeight] = ir.tensor(p + "attention.qkv.weight", {hidden, 3 * hidden}, w);
    if (any_bias) qkv.w[slot::kBias] = ir.tensor(p + "attention.qkv.bias", {3 * hidden}, bias);
    const int32_t qkv_out = ir.add(std::move(qkv));

    Op att;
    att.kind = OpKind::Attention;
    att.name = g.node(l.att.softmax).name();
    att.in0 = qkv_out;
    att.out = ir.value(p + "context", hidden);
    att.num_heads = static_cast<int32_t>(l.att.heads);
    att.scale = static_cast<float>(l.att.scale);
    const int32_t context = ir.add(std::move(att));

    auto linear = [&](const LinearMatch& m, const std::string& name, int32_t x, int32_t residual, Activation act) {
      Op o;
      o.kind = OpKind::Linear;
      o.name = g.node(m.matmul).name();
      o.in0 = x;
      o.in1 = residual;
      o.act = act;
      o.out = ir.value(name, m.out_features);
      o.w[slot::kWeight] = ir.weight(name + ".weight", m.weight, {m.in_features, m.out_features});
      if (!m.bias.empty()) o.w[slot::kBias] = ir.weight(name + ".bias", m.bias, {m.out_features});
      return ir.add(std::move(o));
    };
    auto layernorm = [&](const LayerNormMatch& m, const std::string& name, int32_t x) {
      Op o;
      o.kind = OpKind::LayerNorm;
      o.name = g.node(m.nodes.back()).name();
      o.in0 = x;
      o.eps = m.eps;
      o.out = ir.value(name, hidden);
      o.w[slot::kGamma] = ir.weight(name + ".gamma", m.gamma, {hidden});
      o.w[slot::kBeta] = ir.weight(name + ".beta", m.beta, {hidden});
      return ir.add(std::move(o));
    };
    const int32_t ao = linear(l.attn_out, p + "attention.output", context, cur, Activation::None);
    const int32_t a = layernorm(l.ln1, p + "attention.ln", ao);
    const int32_t mid = linear(l.inter, p + "intermediate", a, -1, l.gelu.act);
    const int32_t o = linear(l.out, p + "output", mid, a, Activation::None);
    cur = layernorm(l.ln2, p + "output.ln", o);
  }
  return cur;
}

}  // namespace onnx_import
}  // namespace spinel
